"""Dice loss on the foreground of a one-channel (sigmoid) prediction."""
from typing import Optional

import torch.nn as nn
from torch import Tensor

from mmseg.models.losses.utils import weight_reduce_loss
from mmseg.registry import MODELS

_REDUCTIONS = ('none', 'mean', 'sum')


@MODELS.register_module()
class ForegroundDiceLoss(nn.Module):
    """Soft Dice loss of the foreground probability ``sigmoid(logit)``.

    Per sample, over the valid pixels (``target != ignore_index``):

    .. code:: text

        loss = 1 - (2 * sum(p * t) + eps) / (sum(p) + sum(t) + eps),
        p = sigmoid(logit),  t in {0, 1}

    then reduced over the batch (``'mean'`` by default). This is the Dice
    term of MagNet's eq. 15 (the form of Mask2Former's criterion, with the
    same smoothing ``eps = 1``).

    mmseg's own ``DiceLoss`` is not a substitute for one-channel output: its
    one-hot expansion turns the single channel into the indicator of label
    0, i.e. it scores the *background*, and its ``ignore_index`` removes a
    class channel, not pixels (see ``tests/.../test_dice_loss.py``).

    Two-channel (softmax) output is accepted too: the foreground
    probability ``softmax(logits)[1]`` equals ``sigmoid(logit_1 - logit_0)``,
    so the loss is the same function of the logit difference. This lets a
    two-class head such as ``LAVTHead`` add Dice to its cross-entropy.

    Samples whose pixels are all ignored give ``1 - eps / eps = 0`` and still
    count in the batch mean (pass ``avg_factor`` to average differently).
    Nothing is resized: logits and target must have the same spatial size
    (the decode head's ``loss_by_feat`` resizes before calling losses).
    The loss is computed in float32 whatever the input dtype (AMP).

    Args:
        loss_weight (float): Multiplier of the loss. Defaults to 1.0.
        eps (float): Smoothing added to numerator and denominator; must be
            positive (it also defines the all-ignored case). Defaults to 1.0.
        ignore_index (int): Target value of ignored pixels. Defaults to 255.
        reduction (str): ``'none'`` (one value per sample), ``'mean'`` or
            ``'sum'``. Defaults to ``'mean'``.
        loss_name (str): Name of the loss item; must start with ``loss_`` to
            be back-propagated by mmseg. Defaults to ``'loss_dice'``.

    Raises:
        ValueError: On a non-positive ``eps`` or an unknown ``reduction``.
    """

    def __init__(self,
                 loss_weight: float = 1.0,
                 eps: float = 1.0,
                 ignore_index: int = 255,
                 reduction: str = 'mean',
                 loss_name: str = 'loss_dice') -> None:
        super().__init__()
        if not eps > 0:
            raise ValueError(f'ForegroundDiceLoss: eps must be > 0, got '
                             f'{eps!r}')
        if reduction not in _REDUCTIONS:
            raise ValueError(f'ForegroundDiceLoss: reduction must be one of '
                             f'{_REDUCTIONS}, got {reduction!r}')
        self.loss_weight = loss_weight
        self.eps = eps
        self.ignore_index = ignore_index
        self.reduction = reduction
        self._loss_name = loss_name

    def forward(self,
                pred: Tensor,
                target: Tensor,
                weight: Optional[Tensor] = None,
                avg_factor: Optional[float] = None,
                reduction_override: Optional[str] = None,
                ignore_index: Optional[int] = None,
                **kwargs) -> Tensor:
        """Compute the loss.

        Args:
            pred (Tensor): Logits ``(N, 1, H, W)`` or ``(N, H, W)``, or
                two-class logits ``(N, 2, H, W)`` (background, foreground).
            target (Tensor): Labels ``(N, H, W)`` (or ``(N, 1, H, W)``) with
                values 0, 1 or ``ignore_index``.
            weight (Tensor, optional): Pixel weights ``(N, H, W)`` (e.g. from
                an mmseg pixel sampler), multiplying every pixel's
                contribution to the three sums. Defaults to None.
            avg_factor (float, optional): Divisor of the batch sum for
                ``'mean'``. Defaults to None (the batch size).
            reduction_override (str, optional): Overrides ``reduction``.
            ignore_index (int, optional): Overrides ``self.ignore_index``
                when not None (mmseg's decode heads pass theirs).
            **kwargs: Ignored (mmseg passes extra keyword arguments to all
                losses).

        Returns:
            Tensor: The weighted loss (a scalar, or ``(N,)`` for ``'none'``).

        Raises:
            ValueError: On mismatching shapes or target values other than 0,
                1 and the ignore index.
        """
        reduction = reduction_override or self.reduction
        if reduction not in _REDUCTIONS:
            raise ValueError(f'ForegroundDiceLoss: reduction_override must '
                             f'be one of {_REDUCTIONS}, got {reduction!r}')
        ignore = self.ignore_index if ignore_index is None else ignore_index
        if pred.dim() == 4 and pred.shape[1] == 1:
            pred = pred[:, 0]
        elif pred.dim() == 4 and pred.shape[1] == 2:
            # softmax over two classes = sigmoid of the logit difference
            pred = pred[:, 1] - pred[:, 0]
        if target.dim() == 4 and target.shape[1] == 1:
            target = target[:, 0]
        if pred.dim() != 3 or pred.shape != target.shape:
            raise ValueError(
                f'ForegroundDiceLoss: pred must be (N, 1, H, W), (N, 2, H, W) or (N, H, W) '
                f'and target (N, H, W) of the same size (resize before the '
                f'loss); got pred {tuple(pred.shape)} and target '
                f'{tuple(target.shape)}')
        if weight is not None and weight.shape != target.shape:
            raise ValueError(f'ForegroundDiceLoss: weight must be (N, H, W)='
                             f'{tuple(target.shape)}, got '
                             f'{tuple(weight.shape)}')
        valid = target != ignore
        positive = target == 1
        bad = valid & ~positive & (target != 0)
        if bad.any():
            raise ValueError(
                f'ForegroundDiceLoss: target values must be 0, 1 or '
                f'ignore_index={ignore}, found '
                f'{sorted(target[bad].unique().tolist())}')

        pixel_w = valid.float()
        if weight is not None:
            pixel_w = pixel_w * weight.float()
        prob = pred.float().sigmoid() * pixel_w
        tgt = positive.float() * pixel_w
        inter = (prob * positive.float()).flatten(1).sum(1)
        dice = (2 * inter + self.eps) / (
            prob.flatten(1).sum(1) + tgt.flatten(1).sum(1) + self.eps)
        loss = weight_reduce_loss(1 - dice, None, reduction, avg_factor)
        return self.loss_weight * loss

    @property
    def loss_name(self) -> str:
        """str: Name of the loss item (``loss_`` prefix = back-propagated)."""
        return self._loss_name
