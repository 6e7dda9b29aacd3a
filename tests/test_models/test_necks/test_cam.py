"""Tests of CAM, MagNet's cross-modal alignment module (eqs. 5-11).

The reference below evaluates the equations per sample with the padded words
*removed* (no masking bias), pools with explicit adaptive-pooling bins and
runs the attention head by head with explicit loops over words; only the
bilinear upsampling uses ``F.interpolate`` (the definition of ``Up``).
"""
import math

import pytest
import torch
import torch.nn.functional as F
from tiny_configs import tiny_bert_config

from mmseg.registry import MODELS
from mmseg_ris.models.necks import CAM

B, C, CL, L = 2, 16, 6, 5


def make_inputs(hw, batch=B, seed=0):
    """Visual tokens, words and a mask with 3 and 5 (or 2) real words."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, hw[0] * hw[1], C, generator=gen)
    lang = torch.randn(batch, L, CL, generator=gen)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])[:batch]
    if batch == 1:
        mask = torch.tensor([[1, 1, 0, 0, 0]])
    return x, lang, mask


def linear(layer, inp):
    return inp @ layer.weight.T + layer.bias


def adaptive_pool(fmap, k):
    """(C, H, W) -> (k*k, C), bins [floor(i H / k), ceil((i + 1) H / k))."""
    _, h, w = fmap.shape
    rows = []
    for i in range(k):
        r0, r1 = (i * h) // k, math.ceil((i + 1) * h / k)
        for j in range(k):
            c0, c1 = (j * w) // k, math.ceil((j + 1) * w / k)
            rows.append(fmap[:, r0:r1, c0:c1].mean(dim=(1, 2)))
    return torch.stack(rows)


def reference(module, x, hw, lang, mask):
    """Equations 6-11 per sample, padded words dropped."""
    h, w = hw
    heads = module.num_heads
    xs, ls = [], []
    for b in range(x.shape[0]):
        words = lang[b][mask[b].bool()]  # (n_real, CL)
        t2p_all, p2t_all = [], []
        for branch in module.branches:
            mlp, att = branch.mlp, branch.attn
            if branch.scale is None:
                tokens = x[b]
            else:
                tokens = adaptive_pool(x[b].T.reshape(C, h, w), branch.scale)
            hid = linear(mlp.fc1, tokens)
            hid = F.layer_norm(hid, (hid.shape[-1], ), mlp.norm.weight,
                               mlp.norm.bias, eps=1e-6)
            pk = linear(mlp.fc3, F.gelu(linear(mlp.fc2, hid)))  # eq. 6
            q = linear(att.vis_proj, pk)
            k = linear(att.lang_proj, words)
            vv = linear(att.vis_value, pk)
            vl = linear(att.lang_value, words)
            d = q.shape[1] // heads
            t2p = torch.zeros_like(q)
            p2t = torch.zeros(words.shape[0], q.shape[1])
            for hd in range(heads):
                sl = slice(hd * d, (hd + 1) * d)
                logits = q[:, sl] @ k[:, sl].T / math.sqrt(d)  # (N, n_real)
                # pixel queries: softmax over the real words, loop over words
                wts = logits.softmax(dim=1)
                for m in range(words.shape[0]):
                    t2p[:, sl] += wts[:, m:m + 1] * vl[m, sl]
                # word queries: softmax over the (pooled) pixels
                p2t[:, sl] = logits.T.softmax(dim=1) @ vv[:, sl]
            if branch.scale is not None:
                kk = branch.scale
                t2p = F.interpolate(
                    t2p.T.reshape(1, -1, kk, kk), size=(h, w),
                    mode='bilinear', align_corners=False)[0].reshape(
                        -1, h * w).T
            t2p_all.append(t2p)
            p2t_all.append(p2t)
        p_cat = torch.cat(t2p_all, 1)
        o_cat = torch.cat(p2t_all, 1)
        vf, lf = module.vis_fuse, module.lang_fuse
        xs.append(x[b] + torch.tanh(
            linear(vf.fc2, F.gelu(linear(vf.fc1, p_cat)))))  # eq. 11
        ls.append(words + torch.tanh(
            linear(lf.fc2, F.gelu(linear(lf.fc1, o_cat)))))  # eq. 10
    return xs, ls


@pytest.mark.parametrize('num_heads', [1, 2])
@pytest.mark.parametrize('scales,hw', [((1, 2, 3), (4, 5)), ((), (3, 4))])
def test_cam_matches_reference(num_heads, scales, hw):
    torch.manual_seed(0)
    module = CAM(C, CL, pool_scales=scales, num_heads=num_heads,
                 gate_init='xavier')
    x, lang, mask = make_inputs(hw)
    x_stream, x_out, lang_new = module(x, hw, lang, mask)
    assert x_out is x_stream  # MagNet's decoder sees the fused stream
    exp_x, exp_l = reference(module, x, hw, lang, mask)
    for b in range(B):
        torch.testing.assert_close(x_stream[b], exp_x[b], rtol=1e-5,
                                   atol=1e-5)
        real = mask[b].bool()
        torch.testing.assert_close(lang_new[b][real], exp_l[b], rtol=1e-5,
                                   atol=1e-5)
        # padded words keep their input
        assert torch.equal(lang_new[b][~real], lang[b][~real])
    # the fusion really changes both streams (the test is not vacuous)
    assert (x_stream - x).abs().max() > 1e-2
    assert (lang_new - lang).abs().max() > 1e-2


@pytest.mark.parametrize('batch', [1, 2])
@pytest.mark.parametrize('hw', [(3, 4), (5, 7), (1, 1), (7, 2)])
@pytest.mark.parametrize('scales', [(1, 2, 3, 6), (2, ), ()])
def test_shapes_and_branch_count(batch, hw, scales):
    module = CAM(C, CL, pool_scales=scales, gate_init='xavier')
    assert len(module.branches) == max(len(scales), 1)
    assert [br.scale for br in module.branches] == (list(scales) or [None])
    x, lang, mask = make_inputs(hw, batch)
    x_stream, x_out, lang_new = module(x, hw, lang, mask)
    assert x_stream.shape == x_out.shape == x.shape
    assert lang_new.shape == lang.shape
    assert torch.isfinite(x_stream).all() and torch.isfinite(lang_new).all()


def test_default_widths():
    module = CAM(128, 768)
    assert module.embed_channels == 32  # C // 4 per scale
    assert module.vis_fuse.fc1.in_features == 128  # 4 scales x C/4 = C
    assert module.lang_fuse.fc1.in_features == 128
    assert module.lang_fuse.fc2.out_features == 768
    assert module.branches[0].mlp.fc1.out_features == 512  # 4C
    assert CAM(128, 768, pool_scales=()).vis_fuse.fc1.in_features == 32


def test_padding_words_have_no_influence():
    torch.manual_seed(0)
    module = CAM(C, CL, num_heads=2, attn_drop=0.1, gate_init='xavier')
    module.eval()
    hw = (4, 5)
    x, lang, mask = make_inputs(hw)
    x_stream, _, lang_new = module(x, hw, lang, mask)
    garbage = lang.clone()
    pad = ~mask.bool()
    garbage[pad] = torch.randn(int(pad.sum()), CL) * 1e6
    x_stream_g, _, lang_new_g = module(x, hw, garbage, mask)
    assert torch.equal(x_stream, x_stream_g)
    assert torch.equal(lang_new[~pad], lang_new_g[~pad])
    assert torch.equal(lang_new_g[pad], garbage[pad])


def test_all_padding_sentence_is_finite():
    module = CAM(C, CL, gate_init='xavier')
    x, lang, _ = make_inputs((3, 3))
    x_stream, _, lang_new = module(x, (3, 3), lang, torch.zeros(B, L))
    assert torch.isfinite(x_stream).all()
    assert torch.equal(lang_new, lang)


def test_zero_init_is_identity_and_learns():
    torch.manual_seed(0)
    module = CAM(C, CL)  # gate_init='zero_last'
    hw = (4, 4)
    x, lang, mask = make_inputs(hw)
    x = x.requires_grad_()
    lang = lang.requires_grad_()
    x_stream, _, lang_new = module(x, hw, lang, mask)
    assert torch.equal(x_stream, x)
    assert torch.equal(lang_new, lang)
    (x_stream.pow(2).sum() + lang_new.pow(2).sum()).backward()
    # the zeroed last layers get gradients, so the branches can start
    assert module.vis_fuse.fc2.weight.grad.abs().sum() > 0
    assert module.lang_fuse.fc2.weight.grad.abs().sum() > 0
    assert x.grad.abs().sum() > 0 and lang.grad.abs().sum() > 0
    # one SGD step moves both streams away from the identity
    with torch.no_grad():
        for p in module.parameters():
            if p.grad is not None:
                p -= 0.1 * p.grad
    x_stream, _, lang_new = module(x, hw, lang, mask)
    assert not torch.equal(x_stream, x)
    assert not torch.equal(lang_new[mask.bool()], lang[mask.bool()])
    # init_weights (called by the backbone) restores the zero start
    module.init_weights()
    x_stream, _, lang_new = module(x, hw, lang, mask)
    assert torch.equal(x_stream, x) and torch.equal(lang_new, lang)


def test_gradients_cross_modalities():
    torch.manual_seed(0)
    module = CAM(C, CL, gate_init='xavier')
    hw = (3, 5)
    x, lang, mask = make_inputs(hw)
    real = mask.bool()
    # image stream -> words: only real words receive gradient
    lang_ = lang.clone().requires_grad_()
    x_stream, _, _ = module(x, hw, lang_, mask)
    x_stream.pow(2).sum().backward()
    grad_norm = lang_.grad.norm(dim=-1)
    assert (grad_norm[real] > 0).all()
    assert (grad_norm[~real] == 0).all()
    # language stream (real words) -> pixels
    x_ = x.clone().requires_grad_()
    _, _, lang_new = module(x_, hw, lang, mask)
    lang_new[real].pow(2).sum().backward()
    assert (x_.grad.norm(dim=-1) > 0).all()
    # every parameter of the module takes part in the update
    module.zero_grad()
    x_stream, _, lang_new = module(x, hw, lang, mask)
    (x_stream.pow(2).sum() + lang_new[real].pow(2).sum()).backward()
    for name, p in module.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_registry_and_bad_arguments():
    module = MODELS.build(
        dict(type='CAM', vis_channels=C, lang_channels=CL,
             pool_scales=(1, 3), num_heads=2))
    assert isinstance(module, CAM) and module.pool_scales == (1, 3)
    with pytest.raises(ValueError, match='num_heads'):
        CAM(C, CL, num_heads=3)
    with pytest.raises(ValueError, match='pool_scales'):
        CAM(C, CL, pool_scales=(1, 0))
    with pytest.raises(ValueError, match='pool_scales'):
        CAM(C, CL, pool_scales=(2, 2))
    with pytest.raises(ValueError, match='gate_init'):
        CAM(C, CL, gate_init='zeros')
    with pytest.raises(ValueError, match='attn_drop'):
        CAM(C, CL, attn_drop=1.0)
    x, lang, mask = make_inputs((3, 4))
    with pytest.raises(ValueError, match='hw'):
        module(x, (4, 4), lang, mask)
    with pytest.raises(ValueError, match='lang must be'):
        module(x, (3, 4), lang[..., :3], mask)
    with pytest.raises(ValueError, match='lang_mask'):
        module(x, (3, 4), lang, mask[:, :3])
    with pytest.raises(ValueError, match='x must be'):
        module(x[..., :3], (3, 4), lang, mask)


def test_in_lang_swin_starts_as_plain_swin():
    """The backbone fills the widths; zero-init CAMs leave both streams."""
    torch.manual_seed(0)
    swin = dict(
        type='LangSwinTransformer',
        pretrain_img_size=32,
        embed_dims=8,
        depths=(1, 1, 1, 1),
        num_heads=(1, 1, 2, 2),
        window_size=4,
        out_norm=False,
        text_encoder=dict(
            type='BertLanguageEncoder',
            config=dict(tiny_bert_config(vocab_size=50), num_hidden_layers=4),
            stages=(1, 1, 1, 1)))
    with_cam = MODELS.build(dict(swin, fusions=dict(type='CAM')))
    plain = MODELS.build(dict(swin, fusions=None))
    with_cam.init_weights()
    missing, unexpected = plain.load_state_dict(
        with_cam.state_dict(), strict=False)
    assert not missing and all(k.startswith('fusions.') for k in unexpected)
    assert [f.vis_channels for f in with_cam.fusions] == [8, 16, 32, 64]
    assert all(f.lang_channels == 32 for f in with_cam.fusions)
    with_cam.eval()
    plain.eval()
    img = torch.randn(1, 3, 32, 32)  # stage 4 is 1x1, smaller than scale 6
    ids = torch.tensor([[2, 7, 9, 3, 0, 0]])
    att = torch.tensor([[1, 1, 1, 1, 0, 0]])
    feats, lang, _ = with_cam(img, ids, att)
    feats_p, lang_p, _ = plain(img, ids, att)
    assert [f.shape[-1] for f in feats] == [8, 4, 2, 1]
    for a, b in zip(feats, feats_p):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(lang, lang_p)
