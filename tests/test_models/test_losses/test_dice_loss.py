"""Tests of ForegroundDiceLoss against hand-computed values.

Logits are chosen so that the sigmoids are exact fractions:
sigmoid(0) = 1/2, sigmoid(ln 3) = 3/4, sigmoid(-ln 3) = 1/4.
"""
import math

import pytest
import torch
from mmseg.models.losses import DiceLoss

from mmseg.registry import MODELS
from mmseg_ris.models.losses import ForegroundDiceLoss

LN3 = math.log(3.0)
# sigmoid: [[1/2, 3/4], [1/4, 1/2]]
LOGITS = torch.tensor([[[[0.0, LN3], [-LN3, 0.0]]]])  # (1, 1, 2, 2)
TARGET = torch.tensor([[[1, 1], [0, 0]]])  # (1, 2, 2)


def test_hand_computed_value():
    # sum(p t) = 1/2 + 3/4 = 5/4, sum(p) = 2, sum(t) = 2, eps = 1:
    # 1 - (2 * 5/4 + 1) / (2 + 2 + 1) = 1 - 3.5 / 5 = 0.3
    loss = ForegroundDiceLoss()(LOGITS, TARGET)
    assert loss.item() == pytest.approx(0.3, abs=1e-6)
    # (N, H, W) logits give the same value
    assert ForegroundDiceLoss()(LOGITS[:, 0], TARGET).item() == pytest.approx(
        0.3, abs=1e-6)


def test_mmseg_dice_scores_the_background():
    """mmseg's DiceLoss on one channel is the Dice of the *background*.

    Background indicator b = 1 - t = [[0, 0], [1, 1]]:
    sum(p b) = 1/4 + 1/2 = 3/4, sum(p) = 2, sum(b) = 2:
    1 - (2 * 3/4 + 1) / (2 + 2 + 1) = 1 - 2.5 / 5 = 0.5
    """
    mmseg_loss = DiceLoss(use_sigmoid=True, naive_dice=True, eps=1.0)
    assert mmseg_loss(LOGITS, TARGET).item() == pytest.approx(0.5, abs=1e-6)
    assert ForegroundDiceLoss()(LOGITS, TARGET).item() == pytest.approx(
        0.3, abs=1e-6)


def test_ignored_pixels_and_batch_mean():
    target = torch.tensor([[[1, 255], [0, 0]]])
    # valid pixels p = 1/2, 1/4, 1/2 with t = 1, 0, 0:
    # 1 - (2 * 1/2 + 1) / (5/4 + 1 + 1) = 1 - 2 / 3.25 = 5/13
    loss = ForegroundDiceLoss()(LOGITS, target)
    assert loss.item() == pytest.approx(5 / 13, abs=1e-6)
    # a second sample with every pixel ignored gives 0 and halves the mean
    logits2 = torch.cat([LOGITS, LOGITS])
    target2 = torch.cat([target, torch.full_like(target, 255)])
    per_sample = ForegroundDiceLoss(reduction='none')(logits2, target2)
    torch.testing.assert_close(per_sample, torch.tensor([5 / 13, 0.0]))
    assert ForegroundDiceLoss()(logits2, target2).item() == pytest.approx(
        5 / 26, abs=1e-6)
    # the ignore index passed at call time (as mmseg heads do) wins
    target3 = torch.tensor([[[1, 7], [0, 0]]])
    assert ForegroundDiceLoss()(LOGITS, target3,
                                ignore_index=7).item() == pytest.approx(
                                    5 / 13, abs=1e-6)


def test_weights_reductions_and_gradient():
    logits = LOGITS.clone().requires_grad_()
    loss = ForegroundDiceLoss(loss_weight=2.0)(logits, TARGET)
    assert loss.item() == pytest.approx(0.6, abs=1e-6)
    loss.backward()
    # raising a foreground logit lowers the loss, a background one raises it
    assert logits.grad[0, 0, 0, 1] < 0 and logits.grad[0, 0, 1, 0] > 0
    # pixel weight 0 = ignored pixel
    weight = torch.tensor([[[1.0, 0.0], [1.0, 1.0]]])
    target = torch.tensor([[[1, 1], [0, 0]]])
    assert ForegroundDiceLoss()(LOGITS, target,
                                weight=weight).item() == pytest.approx(
                                    5 / 13, abs=1e-6)
    two = torch.cat([LOGITS, LOGITS])
    assert ForegroundDiceLoss()(
        two, torch.cat([TARGET, TARGET]),
        reduction_override='sum').item() == pytest.approx(0.6, abs=1e-6)
    assert ForegroundDiceLoss()(
        two, torch.cat([TARGET, TARGET]),
        avg_factor=4).item() == pytest.approx(0.15, abs=1e-6)


def test_registry_and_errors():
    loss = MODELS.build(
        dict(type='ForegroundDiceLoss', loss_weight=2.0, loss_name='loss_x'))
    assert isinstance(loss, ForegroundDiceLoss)
    assert loss.loss_name == 'loss_x' and loss.loss_weight == 2.0
    with pytest.raises(ValueError, match='same size'):
        loss(torch.zeros(1, 1, 4, 4), torch.zeros(1, 2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match='pred must be'):
        loss(torch.zeros(1, 3, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match=r'found \[2\]'):
        loss(LOGITS, torch.tensor([[[1, 2], [0, 0]]]))
    with pytest.raises(ValueError, match='eps'):
        ForegroundDiceLoss(eps=0)
    with pytest.raises(ValueError, match='reduction'):
        ForegroundDiceLoss(reduction='max')
    with pytest.raises(ValueError, match='weight'):
        loss(LOGITS, TARGET, weight=torch.ones(1))


def test_two_class_logits_use_the_softmax_foreground():
    """(N, 2, H, W) logits: Dice of softmax(.)[1], evaluated here directly from its definition."""
    torch.manual_seed(0)
    logits = torch.randn(3, 2, 5, 4)
    target = (torch.rand(3, 5, 4) > 0.6).long()
    target[0, 0, 0] = 255
    prob = torch.softmax(logits, dim=1)[:, 1]
    valid = (target != 255).float()
    expected = []
    for i in range(3):
        p, t, v = prob[i] * valid[i], (target[i] == 1).float(), valid[i]
        expected.append(1 - (2 * (p * t).sum() + 1) / (p.sum() + (t * v).sum() + 1))
    loss = ForegroundDiceLoss(reduction='none')(logits, target)
    torch.testing.assert_close(loss, torch.stack(expected))
    with pytest.raises(ValueError, match=r'\(N, 2, H, W\)'):
        ForegroundDiceLoss()(torch.randn(3, 3, 5, 4), target)
