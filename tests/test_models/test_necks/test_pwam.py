"""Tests of PWAM (LAVT's pixel-word attention + language gate) and TanhGate."""
import math

import pytest
import torch
import torch.nn.functional as F
from mmengine.model.weight_init import trunc_normal_init

from mmseg.registry import MODELS
from mmseg_ris.models.necks import PWAM, TanhGate

B, H, W, C, CL, L = 2, 3, 4, 8, 6, 5


def make_inputs(seed=0):
    """Visual tokens, words and a mask with 3 and 5 real words."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(B, H * W, C, generator=gen)
    lang = torch.randn(B, L, CL, generator=gen)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    return x, lang, mask


def conv1x1(layer, inp):
    """Apply a kernel-1 Conv1d as a matrix product on (N, C_in) rows."""
    return inp @ layer.weight[:, :, 0].T + layer.bias


def instance_norm(y):
    """Normalise (N, C) rows over N per channel, biased variance, eps 1e-5."""
    mean = y.mean(dim=0, keepdim=True)
    var = ((y - mean)**2).mean(dim=0, keepdim=True)
    return (y - mean) / torch.sqrt(var + 1e-5)


def reference_r(module, x, lang, mask):
    """LAVT's r computed per sample with the padded words *removed*.

    Independent of the module's masking: no additive bias, no masked keys,
    a plain softmax over the real words only.
    """
    heads = module.num_heads
    d = C // heads
    outs = []
    for b in range(B):
        words = lang[b][mask[b].bool()]  # (n_real, CL)
        xb = x[b]  # (HW, C)
        vis = F.gelu(conv1x1(module.vis_proj[0], xb))
        q = instance_norm(conv1x1(module.query_proj[0], xb))
        k = conv1x1(module.key_proj, words)
        v = conv1x1(module.value_proj, words)
        per_head = []
        for h in range(heads):
            sl = slice(h * d, (h + 1) * d)
            att = torch.softmax(q[:, sl] @ k[:, sl].T / math.sqrt(d), dim=1)
            per_head.append(att @ v[:, sl])
        out = instance_norm(conv1x1(module.out_proj[0], torch.cat(per_head,
                                                                   1)))
        outs.append(F.gelu(conv1x1(module.mm_proj[0], vis * out)))
    return torch.stack(outs)


@pytest.mark.parametrize('num_heads', [1, 2])
def test_pwam_matches_reference_and_shapes(num_heads):
    torch.manual_seed(0)
    module = PWAM(C, CL, num_heads=num_heads, gate_init='trunc_normal')
    x, lang, mask = make_inputs()
    x_stream, x_out, lang_out = module(x, (H, W), lang, mask)
    assert x_stream.shape == (B, H * W, C)
    assert x_out.shape == (B, H * W, C)
    assert lang_out is lang  # LAVT fuses the image side only
    expected_r = reference_r(module, x, lang, mask)
    torch.testing.assert_close(x_out, expected_r, rtol=1e-5, atol=1e-5)
    gate = module.gate
    expected_gate = torch.tanh(
        F.relu(expected_r @ gate.fc1.weight.T) @ gate.fc2.weight.T)
    torch.testing.assert_close(
        x_stream, x + expected_gate * expected_r, rtol=1e-5, atol=1e-5)


def test_pwam_registered():
    module = MODELS.build(
        dict(type='PWAM', vis_channels=C, lang_channels=CL, num_heads=2))
    assert isinstance(module, PWAM)
    assert module.num_heads == 2
    assert isinstance(MODELS.build(dict(type='TanhGate', channels=4)),
                      TanhGate)


def test_padding_words_have_no_influence():
    torch.manual_seed(0)
    module = PWAM(C, CL, gate_init='trunc_normal')
    x, lang, mask = make_inputs()
    outputs = module(x, (H, W), lang, mask)
    garbage = lang.clone()
    pad = ~mask.bool()
    garbage[pad] = torch.randn(int(pad.sum()), CL) * 1e6
    outputs_garbage = module(x, (H, W), garbage, mask)
    for a, b in zip(outputs[:2], outputs_garbage[:2]):
        assert torch.equal(a, b)


def test_all_padding_sentence_gives_finite_output():
    module = PWAM(C, CL)
    x, lang, _ = make_inputs()
    _, x_out, _ = module(x, (H, W), lang, torch.zeros(B, L))
    assert torch.isfinite(x_out).all()


def test_zero_last_gate_keeps_the_stream_and_can_learn():
    torch.manual_seed(0)
    module = PWAM(C, CL)  # default gate_init='zero_last'
    x, lang, mask = make_inputs()
    x_stream, x_out, _ = module(x, (H, W), lang, mask)
    assert torch.equal(x_stream, x)
    assert x_out.abs().sum() > 0
    # The last layer gets a gradient (the gate is not dead) ...
    x_stream.pow(2).sum().backward()
    assert module.gate.fc2.weight.grad.abs().sum() > 0
    # ... and a model-wide init pass that overwrites it (LAVT's accident) is
    # undone by the module's own init_weights.
    trunc_normal_init(module.gate.fc2, std=0.02, bias=0.)
    assert not torch.equal(module(x, (H, W), lang, mask)[0], x)
    module.init_weights()
    assert torch.equal(module(x, (H, W), lang, mask)[0], x)


def test_trunc_normal_gate_changes_the_stream():
    torch.manual_seed(0)
    module = PWAM(C, CL, gate_init='trunc_normal')
    x, lang, mask = make_inputs()
    x_stream, _, _ = module(x, (H, W), lang, mask)
    assert not torch.equal(x_stream, x)
    assert 0.01 < module.gate.fc2.weight.std() < 0.03  # std 0.02


def test_gradient_reaches_real_words_only():
    torch.manual_seed(0)
    module = PWAM(C, CL)
    x, lang, mask = make_inputs()
    lang = lang.requires_grad_()
    _, x_out, _ = module(x, (H, W), lang, mask)
    x_out.pow(2).sum().backward()
    grad_norm = lang.grad.norm(dim=-1)  # (B, L)
    assert (grad_norm[mask.bool()] > 0).all()
    assert (grad_norm[~mask.bool()] == 0).all()


def test_gate_values():
    gate = TanhGate(3, init_mode='trunc_normal')
    with torch.no_grad():
        gate.fc1.weight.copy_(torch.eye(3))
        gate.fc2.weight.copy_(2 * torch.eye(3))
    v = torch.tensor([[1.0, -1.0, 0.5]])
    # tanh(2 * relu(v)) by hand: tanh(2), tanh(0), tanh(1)
    expected = torch.tensor([[math.tanh(2.0), 0.0, math.tanh(1.0)]])
    torch.testing.assert_close(gate(v), expected)
    gelu_gate = TanhGate(3, act_cfg=dict(type='GELU'))
    assert isinstance(gelu_gate.act, torch.nn.GELU)
    assert torch.equal(gelu_gate(v), torch.zeros_like(v))  # zero_last


@pytest.mark.parametrize('kwargs, match', [
    (dict(vis_channels=8, lang_channels=6, num_heads=3), 'does not divide'),
    (dict(vis_channels=0, lang_channels=6), 'vis_channels'),
    (dict(vis_channels=8, lang_channels=6, dropout=1.0), 'dropout'),
    (dict(vis_channels=8, lang_channels=6, gate_init='zeros'), 'init_mode'),
    (dict(vis_channels=8, lang_channels=6, output='both'), 'output must be'),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PWAM(**kwargs)


def test_stream_output_sends_the_stream_to_the_decoder():
    torch.manual_seed(0)
    fused = PWAM(C, CL, num_heads=2, gate_init='trunc_normal')
    stream = PWAM(C, CL, num_heads=2, gate_init='trunc_normal', output='stream')
    stream.load_state_dict(fused.state_dict())
    x, lang, mask = make_inputs()
    s1, out1, l1 = fused(x, (H, W), lang, mask)
    s2, out2, l2 = stream(x, (H, W), lang, mask)
    r = reference_r(fused, x, lang, mask)
    torch.testing.assert_close(out1, r, rtol=1e-4, atol=1e-5)  # LAVT: the decoder gets r
    torch.testing.assert_close(s2, s1)
    torch.testing.assert_close(out2, s1)  # stream: the decoder gets x + gate(r) * r
    torch.testing.assert_close(s2, x + fused.gate(r) * r, rtol=1e-4, atol=1e-5)
    assert torch.equal(l2, lang)


def test_bad_inputs_name_the_argument():
    module = PWAM(C, CL)
    x, lang, mask = make_inputs()
    with pytest.raises(ValueError, match='PWAM: x must be'):
        module(x[..., :4], (H, W), lang, mask)
    with pytest.raises(ValueError, match='hw='):
        module(x, (H, W + 1), lang, mask)
    with pytest.raises(ValueError, match='lang must be'):
        module(x, (H, W), lang[..., :3], mask)
    with pytest.raises(ValueError, match='lang_mask must be'):
        module(x, (H, W), lang, mask[:, :3])
