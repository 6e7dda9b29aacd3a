"""Tests of CrossModalAlignmentLoss against eqs. 12-14 evaluated directly.

The reference works on Python floats (double precision) with explicit loops
over pixels: no tensors, no log-sum-exp, no chunking.
"""
import math

import pytest
import torch

from mmseg.registry import MODELS
from mmseg_ris.models.losses import CrossModalAlignmentLoss

N, C, H, W = 3, 3, 3, 3


def unit(v):
    norm = math.sqrt(sum(a * a for a in v))
    return [a / norm for a in v]


def dot(a, b):
    return sum(x * y for x, y in zip(a, b))


def mean_vec(vs):
    return [sum(v[c] for v in vs) / len(vs) for c in range(len(vs[0]))]


def ref_cal(feats, target, text, tau1, tau2, use_p2p, use_p2t, log):
    """Eqs. 12-14 (T_avg in eq. 14), sample mean over samples with P and N."""
    f = (lambda r: -math.log(r)) if log else (lambda r: -r)
    losses = []
    for b in range(feats.shape[0]):
        pos, neg = [], []
        for y in range(feats.shape[2]):
            for x in range(feats.shape[3]):
                v = unit(feats[b, :, y, x].tolist())
                if target[b, y, x] == 1:
                    pos.append(v)
                elif target[b, y, x] == 0:
                    neg.append(v)
        if not pos or not neg:
            continue
        pavg, navg = unit(mean_vec(pos)), unit(mean_vec(neg))
        loss = 0.0
        if use_p2p:
            term = 0.0
            for p in pos:
                num = math.exp(dot(p, pavg) / tau1)
                den = num + sum(math.exp(dot(p, n) / tau1) for n in neg)
                term += f(num / den)
            loss += term / len(pos)
            term = 0.0
            for n in neg:
                num = math.exp(dot(n, navg) / tau1)
                den = num + sum(math.exp(dot(n, p) / tau1) for p in pos)
                term += f(num / den)
            loss += term / len(neg)
        if use_p2t:
            t = unit(text[b].tolist())
            term = 0.0
            for p in pos:
                num = math.exp(dot(p, t) / tau2)
                den = num + sum(math.exp(dot(p, n) / tau2) for n in neg)
                term += f(num / den)
            loss += term / len(pos)
        losses.append(loss)
    return sum(losses) / len(losses)


def make_inputs(seed=0):
    gen = torch.Generator().manual_seed(seed)
    feats = torch.randn(N, C, H, W, generator=gen)
    target = torch.tensor([
        [[1, 1, 0], [0, 255, 0], [1, 0, 0]],
        [[0, 0, 0], [0, 1, 1], [255, 1, 1]],
        [[1, 0, 255], [255, 255, 255], [0, 0, 1]],
    ])
    text = torch.randn(N, C, generator=gen)
    return feats, target, text


SWITCHES = [(True, True), (True, False), (False, True)]


@pytest.mark.parametrize('log', [True, False])
@pytest.mark.parametrize('use_p2p,use_p2t', SWITCHES)
@pytest.mark.parametrize('chunk_size', [512, 2])
def test_matches_equations(log, use_p2p, use_p2t, chunk_size):
    feats, target, text = make_inputs()
    tau1, tau2 = 0.5, 0.2
    loss_fn = CrossModalAlignmentLoss(
        tau1=tau1, tau2=tau2, use_p2p=use_p2p, use_p2t=use_p2t, log=log,
        loss_weight=0.5, chunk_size=chunk_size)
    loss = loss_fn(feats, target, text if use_p2t else None)
    expected = ref_cal(feats, target, text, tau1, tau2, use_p2p, use_p2t,
                       log)
    assert loss.item() == pytest.approx(0.5 * expected, rel=1e-5, abs=1e-6)


def test_hand_computed_value():
    """One positive (1, 0), one negative (0, 1), text (1, 0), tau = 1.

    Every ratio is e / (e + e^0) (numerator similarity 1, the opposite pixel
    0), so L_CAL = 3 log(1 + 1/e) with log, -3 e / (e + 1) without.
    """
    feats = torch.tensor([[[[1.0, 0.0]], [[0.0, 1.0]]]])  # (1, 2, 1, 2)
    target = torch.tensor([[[1, 0]]])
    text = torch.tensor([[2.0, 0.0]])  # normalised to (1, 0)
    kwargs = dict(tau1=1.0, tau2=1.0)
    loss = CrossModalAlignmentLoss(**kwargs)(feats, target, text)
    assert loss.item() == pytest.approx(3 * math.log(1 + math.exp(-1)))
    loss = CrossModalAlignmentLoss(log=False, **kwargs)(feats, target, text)
    assert loss.item() == pytest.approx(-3 * math.e / (math.e + 1))


def test_chunked_gradients_equal_unchunked():
    feats, target, text = make_inputs(1)
    grads = []
    for chunk_size in (512, 1):
        f = feats.clone().requires_grad_()
        t = text.clone().requires_grad_()
        CrossModalAlignmentLoss(chunk_size=chunk_size)(f, target,
                                                       t).backward()
        grads.append((f.grad, t.grad))
    torch.testing.assert_close(grads[0][0], grads[1][0])
    torch.testing.assert_close(grads[0][1], grads[1][1])
    assert grads[0][0].abs().sum() > 0 and grads[0][1].abs().sum() > 0
    # ignored pixels get no gradient
    ignored = (target == 255).unsqueeze(1).expand_as(feats)
    assert (grads[0][0][ignored] == 0).all()


def test_degenerate_samples_and_ignored_pixels():
    feats, target, text = make_inputs()
    loss_fn = CrossModalAlignmentLoss()
    full = loss_fn(feats, target, text)
    # adding samples without positives / negatives changes nothing
    feats2 = torch.cat([feats, torch.randn(2, C, H, W)])
    target2 = torch.cat([target, torch.zeros(1, H, W, dtype=torch.long),
                         torch.ones(1, H, W, dtype=torch.long)])
    text2 = torch.cat([text, torch.randn(2, C)])
    torch.testing.assert_close(loss_fn(feats2, target2, text2), full)
    # ignored pixels' features do not matter
    feats3 = feats.clone()
    feats3[(target == 255).unsqueeze(1).expand_as(feats)] = 1e3
    torch.testing.assert_close(loss_fn(feats3, target, text), full)
    # a batch with no usable sample: a graph-connected zero
    f = torch.randn(2, C, H, W, requires_grad=True)
    t = torch.randn(2, C, requires_grad=True)
    target0 = torch.stack([torch.zeros(H, W), torch.full((H, W), 255.)])
    zero = loss_fn(f, target0.long(), t)
    assert zero.item() == 0 and zero.requires_grad
    zero.backward()
    assert torch.equal(f.grad, torch.zeros_like(f))
    assert torch.equal(t.grad, torch.zeros_like(t))


def test_target_with_channel_dim_and_ignore_override():
    feats, target, text = make_inputs()
    loss_fn = CrossModalAlignmentLoss()
    full = loss_fn(feats, target, text)
    torch.testing.assert_close(loss_fn(feats, target[:, None], text), full)
    relabelled = target.masked_fill(target == 255, 9)
    torch.testing.assert_close(
        loss_fn(feats, relabelled, text, ignore_index=9), full)


def test_registry_and_errors():
    loss = MODELS.build(
        dict(type='CrossModalAlignmentLoss', use_p2t=False, loss_weight=0.5))
    assert isinstance(loss, CrossModalAlignmentLoss)
    assert loss.loss_name == 'loss_cal' and loss.tau1 == 0.07
    feats, target, text = make_inputs()
    with pytest.raises(ValueError, match='at least one'):
        CrossModalAlignmentLoss(use_p2p=False, use_p2t=False)
    with pytest.raises(ValueError, match='tau2'):
        CrossModalAlignmentLoss(tau2=0)
    with pytest.raises(ValueError, match='chunk_size'):
        CrossModalAlignmentLoss(chunk_size=0)
    with pytest.raises(ValueError, match='resize'):
        loss(feats, target[:, :2], text)
    with pytest.raises(ValueError, match='pixel_feats'):
        loss(feats[0], target, text)
    with pytest.raises(ValueError, match='needs text_feat'):
        CrossModalAlignmentLoss()(feats, target)
    with pytest.raises(ValueError, match='text_feat must be'):
        CrossModalAlignmentLoss()(feats, target, text[:, :2])
    with pytest.raises(ValueError, match=r'found \[3\]'):
        loss(feats, target.masked_fill(target == 255, 3), text)


def test_float32_under_autocast():
    feats, target, text = make_inputs()
    feats, text = feats.bfloat16(), text.bfloat16()
    loss_fn = CrossModalAlignmentLoss(chunk_size=2)
    expected = loss_fn(feats.float(), target, text.float())
    with torch.autocast('cpu', dtype=torch.bfloat16):
        loss = loss_fn(feats, target, text)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, expected)
