"""Common base of the referring-segmentation decode heads."""
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from mmseg.models.losses import CrossEntropyLoss, accuracy
from mmseg.models.utils import resize
from mmseg.registry import MODELS
from mmseg.utils import ConfigType, SampleList

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


def stack_category_maps(batch_data_samples: SampleList, num_classes: int, ignore_index: int,
                        owner: str) -> Tensor:
    """Stack the samples' ``gt_category_map`` (from :class:`LoadCategoryMap`) into one label batch.

    Maps of different sizes are padded at the bottom / right with ``ignore_index``.

    Args:
        batch_data_samples (list[SegDataSample]): Samples with ``gt_category_map``.
        num_classes (int): Category ids + 1; every id must be below it.
        ignore_index (int): Label of padding (and of pixels to ignore).
        owner (str): The calling module's name, for error messages.

    Returns:
        Tensor: ``(N, 1, H, W)`` int64 labels.

    Raises:
        KeyError: If a sample has no ``gt_category_map``.
        ValueError: If a category id is not below ``num_classes``.
    """
    maps = []
    for i, sample in enumerate(batch_data_samples):
        if 'gt_category_map' not in sample:
            raise KeyError(
                f'{owner}: data sample {i} has no gt_category_map; add LoadCategoryMap to the '
                f'training pipeline (dataset with_image_anns=True)')
        maps.append(sample.gt_category_map.data)
    height = max(m.shape[-2] for m in maps)
    width = max(m.shape[-1] for m in maps)
    labels = torch.stack([
        F.pad(m, (0, width - m.shape[-1], 0, height - m.shape[-2]), value=ignore_index)
        for m in maps
    ]).long()
    valid = labels[labels != ignore_index]
    if valid.numel() and int(valid.max()) >= num_classes:
        raise ValueError(f'{owner}: category id {int(valid.max())} in gt_category_map, but '
                         f'num_classes={num_classes} (ids must be below it)')
    return labels


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

    4. ``category_aux`` (optional, training only): a 1x1 convolution on the
       head's last feature map (the input of ``conv_seg``, given by
       :meth:`_forward_feature`) segments every object of the image by
       category (``gt_category_map`` of :class:`LoadCategoryMap`), and its
       loss joins the referring loss. Words that name a category ("star",
       "cup") only pay off once the features tell the categories apart; a
       model trained from scratch learns that far faster when the features
       the referring mask is read from are also taught the categories
       directly (docs/get_started.md: val oIoU 69.7 vs 60.6 for the tiny
       LAVT; :class:`CategoryAuxHead` on a backbone map helps much less).
       Inference, outputs and checkpoints' other keys do not change.

    ``loss``, ``predict`` and ``predict_by_feat`` are mmseg's (``loss`` adds
    the category loss when configured): logits are resized to the label
    size (loss) or to ``pad_shape`` / ``img_shape`` (predict) bilinearly
    with ``align_corners``.

    Args:
        in_channels (int | Sequence[int]): Input channels (mmseg).
        channels (int): Width before ``conv_seg`` (mmseg).
        num_classes (int): Must be 2. Defaults to 2.
        out_channels (int, optional): 2 (argmax) or 1 (sigmoid > threshold).
            Defaults to None (= 2).
        threshold (float, optional): Decision threshold of one-channel
            heads on the sigmoid. Defaults to None (= 0.5 when
            ``out_channels == 1``; unused by two-channel heads).
        category_aux (dict, optional): ``dict(num_classes=N, loss_decode=...)``:
            category ids + 1 (0 is the background; 91 for COCO's ids 1-90)
            and the loss config(s) (default: softmax ``CrossEntropyLoss``,
            weight 1, averaged over non-ignored pixels as PyTorch does).
            The losses are logged as ``category_<loss_name>``, the pixel
            accuracy as ``category_acc``. Needs a head that implements
            :meth:`_forward_feature`. Defaults to None (off).
        **kwargs: Other :class:`BaseDecodeHead` arguments (``in_index``,
            ``input_transform``, ``norm_cfg``, ``loss_decode``,
            ``align_corners``, ...).

    Raises:
        ValueError: If ``num_classes != 2``, ``threshold`` is outside
            ``(0, 1)``, a loss's ``class_weight`` does not have one entry
            per output channel, or ``category_aux`` is malformed or used
            with a head that has no :meth:`_forward_feature`.
    """

    def __init__(self,
                 in_channels: Union[int, Sequence[int]],
                 channels: int,
                 *,
                 num_classes: int = 2,
                 out_channels: Optional[int] = None,
                 threshold: Optional[float] = None,
                 category_aux: Optional[ConfigType] = None,
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
        self.category_aux = None if category_aux is None else dict(category_aux)
        if self.category_aux is not None:
            self._build_category_aux(self.category_aux)

    def _build_category_aux(self, cfg: dict) -> None:
        """Build ``conv_category`` and ``category_losses`` from ``category_aux``."""
        name = type(self).__name__
        if type(self)._forward_feature is RISBaseDecodeHead._forward_feature:
            raise ValueError(f'{name}: category_aux needs the head\'s last feature map, but '
                             f'{name} does not implement _forward_feature')
        unknown = set(cfg) - {'num_classes', 'loss_decode'}
        num = cfg.get('num_classes')
        if unknown or not isinstance(num, int) or isinstance(num, bool) or num < 2:
            raise ValueError(f'{name}: category_aux must be dict(num_classes=int >= 2 '
                             f'(category ids + 1), loss_decode=...), got {cfg}')
        loss_cfg = cfg.get('loss_decode',
                           dict(type='CrossEntropyLoss', use_sigmoid=False,
                                avg_non_ignore=True, loss_weight=1.0))
        loss_cfgs = [loss_cfg] if isinstance(loss_cfg, dict) else list(loss_cfg)
        self.category_num_classes = num
        self.conv_category = nn.Conv2d(self.channels, num, kernel_size=1)
        self.category_losses = nn.ModuleList(MODELS.build(c) for c in loss_cfgs)

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

    def _forward_feature(self, inputs: Sequence) -> Tensor:
        """The last feature map before ``conv_seg`` (mmseg's name for it).

        Heads whose output is ``cls_seg(feature map)`` implement it to
        support ``category_aux``.

        Args:
            inputs (tuple): The backbone output ``(feats, lang, lang_mask)``.

        Returns:
            Tensor: ``(B, channels, H, W)`` features.
        """
        raise NotImplementedError(
            f'{type(self).__name__} does not expose its last feature map')

    def loss(self, inputs: Sequence, batch_data_samples: SampleList,
             train_cfg: ConfigType) -> Dict[str, Tensor]:
        """mmseg's ``forward`` + ``loss_by_feat``, plus the category loss if configured.

        Args:
            inputs (tuple): The backbone output ``(feats, lang, lang_mask)``.
            batch_data_samples (list[SegDataSample]): Samples with
                ``gt_sem_seg`` (and ``gt_category_map`` for ``category_aux``).
            train_cfg (dict): Training config (unused, mmseg's signature).

        Returns:
            dict[str, Tensor]: The losses and accuracies.
        """
        if self.category_aux is None:
            return super().loss(inputs, batch_data_samples, train_cfg)
        feats = self._forward_feature(inputs)
        losses = self.loss_by_feat(self.cls_seg(feats), batch_data_samples)
        losses.update(self.category_loss_by_feat(feats, batch_data_samples))
        return losses

    def category_loss_by_feat(self, feats: Tensor,
                              batch_data_samples: SampleList) -> Dict[str, Tensor]:
        """The ``category_aux`` losses on the head's last feature map.

        Args:
            feats (Tensor): Output of :meth:`_forward_feature`.
            batch_data_samples (list[SegDataSample]): Samples with
                ``gt_category_map``.

        Returns:
            dict[str, Tensor]: ``category_<loss_name>`` per loss and
            ``category_acc``.
        """
        owner = type(self).__name__
        label = stack_category_maps(batch_data_samples, self.category_num_classes,
                                    self.ignore_index, owner)
        logits = self.conv_category(self.dropout(feats) if self.dropout is not None else feats)
        logits = resize(logits, size=label.shape[2:], mode='bilinear',
                        align_corners=self.align_corners)
        label = label.squeeze(1)
        losses = dict()
        for loss in self.category_losses:
            key = f'category_{loss.loss_name}'
            value = loss(logits, label, ignore_index=self.ignore_index)
            losses[key] = losses[key] + value if key in losses else value
        losses['category_acc'] = accuracy(logits, label, ignore_index=self.ignore_index)
        return losses

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
