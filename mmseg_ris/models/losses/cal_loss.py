"""MagNet's cross-modal alignment loss (CAL), implemented from the paper."""
from functools import partial
from typing import List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from mmseg.registry import MODELS


def _chunk_lse(pos: Tensor, neg: Tensor, inv_tau1: float, inv_tau2: float,
               p2p: bool, p2t: bool) -> Tuple[Tensor, ...]:
    """Log-sum-exps of one block of positives against all negatives.

    Args:
        pos (Tensor): A block of unit positive features ``(c, C)``.
        neg (Tensor): All unit negative features ``(n, C)``.
        inv_tau1 (float): ``1 / tau1``.
        inv_tau2 (float): ``1 / tau2``.
        p2p (bool): Return the two ``tau1`` terms.
        p2t (bool): Return the ``tau2`` term.

    Returns:
        tuple[Tensor, ...]: With ``p2p``: ``lse_j(pos_i . neg_j / tau1)``
        ``(c,)`` and ``lse_i(neg_j . pos_i / tau1)`` over this block ``(n,)``;
        with ``p2t``: ``lse_j(pos_i . neg_j / tau2)`` ``(c,)``.
    """
    sim = pos @ neg.T  # (c, n)
    out = []
    if p2p:
        s1 = sim * inv_tau1
        out += [s1.logsumexp(dim=1), s1.logsumexp(dim=0)]
    if p2t:
        out.append((sim * inv_tau2).logsumexp(dim=1))
    return tuple(out)


@MODELS.register_module()
class CrossModalAlignmentLoss(nn.Module):
    """Pixel-to-pixel and pixel-to-text alignment loss (MagNet eqs. 12-14).

    Implemented from the paper (Chng et al., "Mask Grounding for Referring
    Image Segmentation", CVPR 2024, Sec. 3.4). Per sample, with the
    L2-normalised pixel features ``I`` of the final pixel-decoder mask
    feature, positives ``P`` (target 1), negatives ``N`` (target 0),
    ``I+avg`` / ``I-avg`` the means of the normalised positive / negative
    features (normalised again, so that every dot product is a cosine) and
    ``T`` the normalised sentence feature ``T_avg`` (projected and averaged
    by the caller), write ``R(a; b, B, tau) = e^{a.b/tau} / (e^{a.b/tau} +
    sum_{b' in B} e^{a.b'/tau})``. Then

    .. code:: text

        L_P2P = mean_{i in P} f(R(I+_i; I+avg, N, tau1))
              + mean_{j in N} f(R(I-_j; I-avg, P, tau1))          (13)
        L_P2T = mean_{i in P} f(R(I+_i; T, N, tau2))               (14)
        L_CAL = L_P2P + L_P2T                                      (12)

    with ``f(r) = -log r`` (``log=True``, default) or ``f(r) = -r``
    (``log=False``, the equations exactly as printed). Eq. 14 is printed
    with ``I_avg`` in the numerator, but the paper defines ``T_avg`` right
    after it and calls the term pixel-to-text, so ``T`` is used.

    Why ``log=True`` by default: the printed ratio ``r`` is a softmax
    probability, and ``d(-r)/d(logit) = -r (1 - r)`` vanishes when a pixel
    is badly aligned (``r -> 0``), exactly where the signal is needed;
    ``-log r`` (the InfoNCE / supervised-contrastive form of the alignment
    losses MagNet cites) has gradient ``-(1 - r)``. The two forms have the
    same minimiser.

    Temperatures default to 0.07 (``1/tau ~ 14``), the usual value for
    contrastive losses over L2-normalised features (MoCo, CLIP's initial
    temperature); the paper does not give its values.

    Policies: pixels equal to ``ignore_index`` belong to neither set. A
    sample with no positive or no negative pixel contributes nothing (its
    terms are undefined or trivial); the loss is the mean over the samples
    that contribute, and a batch without any returns a zero that stays in
    the autograd graph (``pixel_feats.sum() * 0``, plus ``text_feat`` when
    ``use_p2t``), so distributed training sees every parameter used.

    Memory: the denominators sum over every pixel of the opposite set, i.e.
    a ``|P| x |N|`` similarity matrix per sample (up to ~5e7 entries at
    stride 4 of 480). It is evaluated as log-sum-exps over blocks of
    ``chunk_size`` positives; with more than one block (and autograd on)
    each block is recomputed in the backward pass (activation
    checkpointing), so at most about six ``chunk_size x |N|`` float32
    buffers exist at once (512 x 14,400 -> ~180 MB) plus ``O((|P| + |N|)
    C)`` for the features. Measured on CPU for one 120 x 120 sample with
    ``|P| = |N| = 7,200`` and ``C = 256``, forward + backward: ~140 MB peak
    with the default ``chunk_size=512`` against ~1.2 GB in one block.
    Computed in float32 whatever the input dtype.

    Args:
        tau1 (float): Temperature of ``L_P2P``. Defaults to 0.07.
        tau2 (float): Temperature of ``L_P2T``. Defaults to 0.07.
        use_p2p (bool): Include ``L_P2P`` (Tab. 3(f)). Defaults to True.
        use_p2t (bool): Include ``L_P2T`` (Tab. 3(f)). Defaults to True.
        log (bool): ``-log`` of the ratio (True) or the printed ``-ratio``
            (False). Defaults to True.
        loss_weight (float): Multiplier of the loss. Defaults to 1.0.
        ignore_index (int): Target value of ignored pixels. Defaults to 255.
        chunk_size (int): Positives per block of the similarity matrix.
            Defaults to 512.
        loss_name (str): Name of the loss item. Defaults to ``'loss_cal'``.

    Raises:
        ValueError: If both terms are off, a temperature is not positive or
            ``chunk_size`` is not a positive int.
    """

    def __init__(self,
                 tau1: float = 0.07,
                 tau2: float = 0.07,
                 use_p2p: bool = True,
                 use_p2t: bool = True,
                 log: bool = True,
                 loss_weight: float = 1.0,
                 ignore_index: int = 255,
                 chunk_size: int = 512,
                 loss_name: str = 'loss_cal') -> None:
        super().__init__()
        if not (use_p2p or use_p2t):
            raise ValueError('CrossModalAlignmentLoss: at least one of '
                             'use_p2p and use_p2t must be True')
        for name, value in (('tau1', tau1), ('tau2', tau2)):
            if not value > 0:
                raise ValueError(f'CrossModalAlignmentLoss: {name} must be '
                                 f'> 0, got {value!r}')
        if not isinstance(chunk_size, int) or chunk_size <= 0:
            raise ValueError(f'CrossModalAlignmentLoss: chunk_size must be a '
                             f'positive int, got {chunk_size!r}')
        self.tau1 = float(tau1)
        self.tau2 = float(tau2)
        self.use_p2p = use_p2p
        self.use_p2t = use_p2t
        self.log = log
        self.loss_weight = loss_weight
        self.ignore_index = ignore_index
        self.chunk_size = chunk_size
        self._loss_name = loss_name

    def _check_inputs(self, pixel_feats: Tensor, target: Tensor,
                      text_feat: Optional[Tensor]) -> Tensor:
        """Validate shapes; return ``target`` as ``(N, H, W)``."""
        if pixel_feats.dim() != 4:
            raise ValueError(f'CrossModalAlignmentLoss: pixel_feats must be '
                             f'(N, C, H, W), got {tuple(pixel_feats.shape)}')
        n, c, h, w = pixel_feats.shape
        if target.dim() == 4 and target.shape[1] == 1:
            target = target[:, 0]
        if tuple(target.shape) != (n, h, w):
            raise ValueError(
                f'CrossModalAlignmentLoss: target must be (N, H, W)='
                f'{(n, h, w)} at the resolution of pixel_feats (resize it '
                f'before the loss), got {tuple(target.shape)}')
        if self.use_p2t:
            if text_feat is None:
                raise ValueError('CrossModalAlignmentLoss: use_p2t=True needs '
                                 'text_feat (N, C)')
            if tuple(text_feat.shape) != (n, c):
                raise ValueError(f'CrossModalAlignmentLoss: text_feat must be '
                                 f'(N, C)={(n, c)}, got '
                                 f'{tuple(text_feat.shape)}')
        return target

    def _ratio_term(self, numer: Tensor, lse: Tensor) -> Tensor:
        """Mean of ``f(e^numer / (e^numer + e^lse))`` over the anchors."""
        log_ratio = numer - torch.logaddexp(numer, lse)
        if self.log:
            return -log_ratio.mean()
        return -log_ratio.exp().mean()

    def _block_lse(self, pos: Tensor, neg: Tensor) -> List[Tensor]:
        """All log-sum-exps of eqs. 13-14, in blocks of positives.

        Returns:
            list[Tensor]: ``[row_lse1 (|P|,), col_lse1 (|N|,)]`` with p2p,
            then ``row_lse2 (|P|,)`` with p2t.
        """
        fn = partial(_chunk_lse, inv_tau1=1.0 / self.tau1,
                     inv_tau2=1.0 / self.tau2, p2p=self.use_p2p,
                     p2t=self.use_p2t)
        blocks = pos.split(self.chunk_size)
        recompute = len(blocks) > 1 and torch.is_grad_enabled() and (
            pos.requires_grad or neg.requires_grad)
        outs = [
            checkpoint(fn, blk, neg, use_reentrant=False)
            if recompute else fn(blk, neg) for blk in blocks
        ]
        result = []
        idx = 0
        if self.use_p2p:
            result.append(torch.cat([o[0] for o in outs]))
            # Column log-sum-exps of the blocks combine by another one.
            result.append(torch.stack([o[1] for o in outs]).logsumexp(0))
            idx = 2
        if self.use_p2t:
            result.append(torch.cat([o[idx] for o in outs]))
        return result

    def _batch_loss(self, pixel_feats: Tensor, text_feat: Optional[Tensor],
                    positive: Tensor,
                    negative: Tensor) -> Tuple[Optional[Tensor], int]:
        """Sum of the per-sample losses and the number of contributing ones.

        Args:
            pixel_feats (Tensor): ``(N, C, H, W)``.
            text_feat (Tensor, optional): ``(N, C)``; used with ``use_p2t``.
            positive (Tensor): ``(N, H, W)`` bool, target 1.
            negative (Tensor): ``(N, H, W)`` bool, target 0.

        Returns:
            tuple: The summed loss (None if no sample contributes) and the
            number of contributing samples.
        """
        feats = F.normalize(pixel_feats.float(), dim=1).flatten(2)
        text = (F.normalize(text_feat.float(), dim=1)
                if self.use_p2t else None)
        total, count = None, 0
        for b in range(feats.shape[0]):
            pos_mask, neg_mask = positive[b].flatten(), negative[b].flatten()
            if not (pos_mask.any() and neg_mask.any()):
                continue
            pos = feats[b][:, pos_mask].T  # (|P|, C)
            neg = feats[b][:, neg_mask].T  # (|N|, C)
            lses = self._block_lse(pos, neg)
            loss = pos.new_zeros(())
            if self.use_p2p:
                pos_avg = F.normalize(pos.mean(0), dim=0)
                neg_avg = F.normalize(neg.mean(0), dim=0)
                loss = loss + self._ratio_term(pos @ pos_avg / self.tau1,
                                               lses[0])
                loss = loss + self._ratio_term(neg @ neg_avg / self.tau1,
                                               lses[1])
            if self.use_p2t:
                loss = loss + self._ratio_term(pos @ text[b] / self.tau2,
                                               lses[-1])
            total = loss if total is None else total + loss
            count += 1
        return total, count

    def forward(self,
                pixel_feats: Tensor,
                target: Tensor,
                text_feat: Optional[Tensor] = None,
                ignore_index: Optional[int] = None) -> Tensor:
        """Compute the loss.

        Args:
            pixel_feats (Tensor): Final pixel-decoder mask features
                ``(N, C, H, W)``.
            target (Tensor): Labels ``(N, H, W)`` (or ``(N, 1, H, W)``) at
                the resolution of ``pixel_feats``: 1 referent, 0 background,
                ``ignore_index`` ignored.
            text_feat (Tensor, optional): Sentence feature ``T_avg`` ``(N,
                C)`` (already projected to ``C`` and averaged over the real
                words). Required when ``use_p2t``.
            ignore_index (int, optional): Overrides ``self.ignore_index``
                when not None.

        Returns:
            Tensor: ``loss_weight * L_CAL`` (scalar).

        Raises:
            ValueError: On mismatching shapes, a missing ``text_feat`` or
                target values other than 0, 1 and the ignore index.
        """
        target = self._check_inputs(pixel_feats, target, text_feat)
        ignore = self.ignore_index if ignore_index is None else ignore_index
        positive = target == 1
        negative = target == 0
        bad = ~(positive | negative | (target == ignore))
        if bad.any():
            raise ValueError(
                f'CrossModalAlignmentLoss: target values must be 0, 1 or '
                f'ignore_index={ignore}, found '
                f'{sorted(target[bad].unique().tolist())}')

        # float32 even under AMP: exp(1 / tau) with tau = 0.07 and sums
        # over thousands of pixels are too coarse in half precision.
        with torch.autocast(device_type=pixel_feats.device.type,
                            enabled=False):
            total, count = self._batch_loss(pixel_feats, text_feat,
                                            positive, negative)

        if total is None:
            zero = pixel_feats.sum() * 0
            if self.use_p2t:
                zero = zero + text_feat.sum() * 0
            return zero
        return self.loss_weight * total / count

    @property
    def loss_name(self) -> str:
        """str: Name of the loss item (``loss_`` prefix = back-propagated)."""
        return self._loss_name
