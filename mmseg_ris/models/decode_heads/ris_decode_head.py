"""Common base of the referring-segmentation decode heads."""
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from torch import Tensor

from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from mmseg.models.losses import CrossEntropyLoss, accuracy
from mmseg.models.utils import resize
from mmseg.utils import SampleList

# Threshold of one-channel heads when none is given: sigmoid > 0.5, i.e.
# logit > 0 (MagNet's rule). mmseg's own default of 0.3 is a
# semantic-segmentation habit, not a RIS one.
DEFAULT_THRESHOLD = 0.5


def split_backbone_output(inputs: Sequence, owner: str) -> Tuple[Sequence[Tensor], Tensor, Tensor]:
    """Validate and unpack the vision-language backbone's ``(feats, lang, lang_mask)``.

    Args:
        inputs (tuple): The backbone output.
        owner (str): The calling module's name, for error messages.

    Returns:
        tuple: ``feats`` (a sequence of NCHW maps), ``lang``, ``lang_mask``.

    Raises:
        TypeError: If ``inputs`` is not a 3-tuple or ``feats`` not a sequence.
    """
    if not isinstance(inputs, (tuple, list)) or len(inputs) != 3:
        raise TypeError(
            f'{owner}.forward expects the backbone output (feats, lang, lang_mask), got '
            f'{type(inputs).__name__}'
            + (f' of length {len(inputs)}' if isinstance(inputs, (tuple, list)) else ''))
    feats, lang, lang_mask = inputs
    if not isinstance(feats, (tuple, list)):
        raise TypeError(f'{owner}: feats must be a list of NCHW maps, got {type(feats).__name__}')
    return feats, lang, lang_mask


class RISBaseDecodeHead(BaseDecodeHead):
    """Base of RIS decode heads: binary output, backbone tuple as input.

    Differences from mmseg's :class:`BaseDecodeHead`, and nothing else:

    1. ``forward(inputs)`` receives the backbone's whole output
       ``(feats, lang, lang_mask)`` (``docs/design.md``). Subclasses call
       :meth:`_split_inputs`, which validates the tuple and applies mmseg's
       own ``_transform_inputs`` (``in_index`` / ``input_transform``) to
       ``feats``; no further selection logic is needed.
    2. Binary only: ``num_classes`` must be 2 (background / referent).
       ``out_channels=None`` means 2 channels (softmax, argmax; LAVT) and
       silences mmseg's hint to use one channel; ``out_channels=1`` means a
       sigmoid head whose :attr:`threshold` defaults to 0.5 instead of
       mmseg's 0.3. :meth:`logits_to_mask` states the decision rule, which
       is the same as ``BaseSegmentor.postprocess_result``.
    3. :meth:`loss_by_feat` is mmseg's, except that a class-weighted
       softmax ``CrossEntropyLoss`` (mean reduction) gets an explicit
       ``avg_factor = sum over non-ignored pixels of class_weight[label]``.
       That is PyTorch's weighted mean, ``F.cross_entropy(weight=w,
       ignore_index=...)``, which LAVT trains with. mmseg 1.2.2 computes
       the same normaliser itself but indexes ``class_weight`` with every
       label, so a single ignored pixel (255, e.g. from batch padding)
       raises an IndexError (a device-side assert on CUDA).

    ``loss``, ``predict`` and ``predict_by_feat`` are mmseg's: logits are
    resized to the label size (loss) or to ``pad_shape`` / ``img_shape``
    (predict) bilinearly with ``align_corners``.

    Args:
        in_channels (int | Sequence[int]): Input channels (mmseg).
        channels (int): Width before ``conv_seg`` (mmseg).
        num_classes (int): Must be 2. Defaults to 2.
        out_channels (int, optional): 2 (argmax) or 1 (sigmoid > threshold).
            Defaults to None (= 2).
        threshold (float, optional): Decision threshold of one-channel
            heads on the sigmoid. Defaults to None (= 0.5 when
            ``out_channels == 1``; unused by two-channel heads).
        **kwargs: Other :class:`BaseDecodeHead` arguments (``in_index``,
            ``input_transform``, ``norm_cfg``, ``loss_decode``,
            ``align_corners``, ...).

    Raises:
        ValueError: If ``num_classes != 2``, ``threshold`` is outside
            ``(0, 1)`` or a loss's ``class_weight`` does not have one entry
            per output channel.
    """

    def __init__(self,
                 in_channels: Union[int, Sequence[int]],
                 channels: int,
                 *,
                 num_classes: int = 2,
                 out_channels: Optional[int] = None,
                 threshold: Optional[float] = None,
                 **kwargs) -> None:
        name = type(self).__name__
        if num_classes != 2:
            raise ValueError(f'{name}: referring segmentation is binary '
                             f'(background / referent), so num_classes must '
                             f'be 2, got {num_classes!r}')
        if out_channels is None:
            out_channels = num_classes
        if out_channels == 1 and threshold is None:
            threshold = DEFAULT_THRESHOLD
        if threshold is not None and not 0.0 < threshold < 1.0:
            raise ValueError(f'{name}: threshold is a sigmoid probability '
                             f'and must be in (0, 1), got {threshold!r}')
        super().__init__(
            in_channels,
            channels,
            num_classes=num_classes,
            out_channels=out_channels,
            threshold=threshold,
            **kwargs)
        for loss in self._losses():
            weight = getattr(loss, 'class_weight', None)
            if (weight is not None and not getattr(loss, 'use_sigmoid', False)
                    and len(weight) != self.out_channels):
                raise ValueError(
                    f'{name}: {type(loss).__name__}.class_weight has '
                    f'{len(weight)} entries for {self.out_channels} output '
                    f'channels')

    def _losses(self) -> List[nn.Module]:
        """The decode losses as a list."""
        if isinstance(self.loss_decode, nn.ModuleList):
            return list(self.loss_decode)
        return [self.loss_decode]

    def _split_inputs(
            self, inputs: Sequence) -> Tuple[Union[Tensor, List[Tensor]],
                                             Tensor, Tensor]:
        """Unpack ``(feats, lang, lang_mask)`` and select the features.

        Args:
            inputs (tuple): The backbone output ``(feats, lang, lang_mask)``
                with ``feats`` a sequence of NCHW maps, ``lang`` ``(B, L,
                Cl)`` and ``lang_mask`` ``(B, L)``.

        Returns:
            tuple: ``feats`` after mmseg's ``_transform_inputs`` (a list for
            ``input_transform='multiple_select'``, one map otherwise),
            ``lang`` and ``lang_mask``.
        """
        feats, lang, lang_mask = split_backbone_output(inputs, type(self).__name__)
        return self._transform_inputs(feats), lang, lang_mask

    def _weighted_ce_avg_factor(self, loss: nn.Module,
                                seg_label: Tensor) -> Optional[Tensor]:
        """PyTorch's weighted-mean normaliser for a class-weighted CE.

        Args:
            loss (nn.Module): One decode loss.
            seg_label (Tensor): Labels ``(N, H, W)``.

        Returns:
            Tensor | None: ``sum(class_weight[label])`` over non-ignored
            pixels for mmseg's softmax ``CrossEntropyLoss`` with class
            weights and mean reduction; None for any other loss (mmseg
            decides).
        """
        if not (isinstance(loss, CrossEntropyLoss) and not loss.use_sigmoid
                and not loss.use_mask and loss.class_weight is not None
                and loss.reduction == 'mean'):
            return None
        weight = seg_label.new_tensor(loss.class_weight, dtype=torch.float32)
        valid = seg_label != self.ignore_index
        labels = seg_label[valid].long()
        if labels.numel() and (labels.min() < 0
                               or labels.max() >= len(weight)):
            raise ValueError(
                f'{type(self).__name__}: labels must be in [0, '
                f'{len(weight) - 1}] or ignore_index={self.ignore_index}, '
                f'got values {labels.unique().tolist()}')
        return weight[labels].sum()

    def loss_by_feat(self, seg_logits: Tensor,
                     batch_data_samples: SampleList) -> dict:
        """Compute the decode losses and ``acc_seg`` (mmseg's recipe).

        Args:
            seg_logits (Tensor): Head output ``(N, out_channels, h, w)``.
            batch_data_samples (list[SegDataSample]): Samples with
                ``gt_sem_seg``.

        Returns:
            dict[str, Tensor]: One entry per loss name, plus ``acc_seg``.
        """
        seg_label = self._stack_batch_gt(batch_data_samples)
        seg_logits = resize(
            input=seg_logits,
            size=seg_label.shape[2:],
            mode='bilinear',
            align_corners=self.align_corners)
        seg_weight = (
            self.sampler.sample(seg_logits, seg_label)
            if self.sampler is not None else None)
        seg_label = seg_label.squeeze(1)

        losses = dict()
        for loss_decode in self._losses():
            extra = dict()
            avg_factor = self._weighted_ce_avg_factor(loss_decode, seg_label)
            if avg_factor is not None:
                extra['avg_factor'] = avg_factor
            value = loss_decode(
                seg_logits,
                seg_label,
                weight=seg_weight,
                ignore_index=self.ignore_index,
                **extra)
            name = loss_decode.loss_name
            losses[name] = losses[name] + value if name in losses else value
        losses['acc_seg'] = accuracy(
            seg_logits, seg_label, ignore_index=self.ignore_index)
        return losses

    def logits_to_mask(self, seg_logits: Tensor) -> Tensor:
        """Apply the decision rule: argmax, or sigmoid > threshold.

        Args:
            seg_logits (Tensor): Logits ``(N, out_channels, H, W)``.

        Returns:
            Tensor: Binary masks ``(N, H, W)``, int64, 1 = referent.
        """
        if seg_logits.shape[1] != self.out_channels:
            raise ValueError(f'{type(self).__name__}: expected '
                             f'{self.out_channels} channels, got shape '
                             f'{tuple(seg_logits.shape)}')
        if self.out_channels == 1:
            return (seg_logits[:, 0].sigmoid() > self.threshold).long()
        return seg_logits.argmax(dim=1)
