"""LAVT's simple top-down decoder."""
from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import ConvModule
from torch import Tensor

from mmseg.registry import MODELS
from mmseg.utils import ConfigType, OptConfigType
from .ris_decode_head import RISBaseDecodeHead


@MODELS.register_module()
class LAVTHead(RISBaseDecodeHead):
    """LAVT's ``SimpleDecoding``: top-down merges, two-class logits.

    Starting from the deepest map, each step upsamples the running feature
    bilinearly to the next shallower map, concatenates ``[running, skip]``
    and applies two ``Conv3x3 + BN + ReLU`` of width ``channels``. With
    Swin-B widths ``[128, 256, 512, 1024]`` and ``channels=512`` the merges
    take 1536, 768 and 640 channels. ``conv_seg`` (1x1, 512 -> 2) gives
    logits at the stride of the shallowest map (4); the segmentor and
    :meth:`loss_by_feat` upsample them (LAVT: bilinear, ``align_corners``
    True, to 480x480).

    The defaults reproduce LAVT: BN (use ``dict(type='SyncBN')`` for
    multi-GPU training, as LAVT does), no dropout, ``align_corners=True``
    (used for the internal upsampling and, through mmseg, for the loss and
    prediction resizing), and ``CrossEntropyLoss`` with class weights
    ``[0.9, 1.1]`` normalised like ``F.cross_entropy(weight=...)`` (see
    :class:`RISBaseDecodeHead`).

    ``merges[i]`` is the merge that produces stride ``in_index[-2 - i]``
    features (``merges[0]`` joins the two deepest maps).

    ``fusion`` (not in LAVT, off by default) adds a fusion module after every
    merge, on the decoder's own features: a pixel there has seen the merged
    deeper maps through two 3x3 convolutions, so it can match words about
    the whole object (on the synthetic set: sizes, relations) at fine
    resolution, where the backbone's shallow stages only see colour. The module is built like the
    backbone's (``vis_channels=channels``; ``lang_channels`` from the
    config) and its stream output ``x + gate(r) * r`` replaces the running
    feature. ``fusion_merges`` limits it to some merges: the stride-4 one
    works on 4x the pixels of the stride-8 one and costs the most.

    Args:
        in_channels (Sequence[int]): Widths of the selected maps, shallow to
            deep. Defaults to ``(128, 256, 512, 1024)`` (Swin-B).
        channels (int): Hidden width. Defaults to 512.
        num_classes (int): Must be 2. Defaults to 2.
        in_index (Sequence[int]): Which backbone maps to use, shallow to
            deep. Defaults to ``(0, 1, 2, 3)``.
        dropout_ratio (float): Dropout before ``conv_seg``. Defaults to 0.0
            (LAVT has none).
        norm_cfg (dict): Norm of the merge convolutions. Defaults to
            ``dict(type='BN', requires_grad=True)``.
        align_corners (bool): ``align_corners`` of every bilinear resize.
            Defaults to True (LAVT).
        loss_decode (dict | Sequence[dict]): Decode loss(es). Defaults to
            LAVT's class-weighted cross entropy.
        fusion (dict, optional): Fusion module (e.g. ``dict(type='PWAM',
            lang_channels=768)``) applied after each merge; must set
            ``lang_channels``. Defaults to None (LAVT).
        fusion_merges (Sequence[int], optional): Indices of the merges
            followed by a fusion module (``merges[0]`` joins the two deepest
            maps); the module after ``merges[i]`` is ``fusions[str(i)]``.
            Defaults to None: every merge.
        **kwargs: Other :class:`RISBaseDecodeHead` / ``BaseDecodeHead``
            arguments (``category_aux``, ``out_channels``, ``act_cfg``, ``conv_cfg``,
            ``ignore_index``, ``init_cfg``, ...). ``input_transform`` is
            fixed to ``'multiple_select'``.

    Raises:
        ValueError: If fewer than two input maps are configured,
            ``in_channels`` and ``in_index`` differ in length, or ``fusion``
            lacks ``lang_channels`` or sets ``vis_channels``, or
            ``fusion_merges`` is given without ``fusion``, is empty, repeats
            an index or names a merge that does not exist.
    """

    def __init__(self,
                 in_channels: Sequence[int] = (128, 256, 512, 1024),
                 channels: int = 512,
                 num_classes: int = 2,
                 in_index: Sequence[int] = (0, 1, 2, 3),
                 dropout_ratio: float = 0.0,
                 norm_cfg: ConfigType = dict(type='BN', requires_grad=True),
                 align_corners: bool = True,
                 loss_decode: ConfigType = dict(
                     type='CrossEntropyLoss',
                     use_sigmoid=False,
                     class_weight=[0.9, 1.1],
                     avg_non_ignore=True,
                     loss_weight=1.0),
                 fusion: OptConfigType = None,
                 fusion_merges: Optional[Sequence[int]] = None,
                 **kwargs) -> None:
        if len(in_channels) < 2 or len(in_channels) != len(in_index):
            raise ValueError(
                f'LAVTHead: needs at least two input maps with one '
                f'in_index each, got in_channels={list(in_channels)} and '
                f'in_index={list(in_index)}')
        if 'input_transform' in kwargs:
            raise ValueError('LAVTHead: input_transform is fixed to '
                             "'multiple_select'; do not set it")
        super().__init__(
            list(in_channels),
            channels,
            num_classes=num_classes,
            in_index=list(in_index),
            input_transform='multiple_select',
            dropout_ratio=dropout_ratio,
            norm_cfg=norm_cfg,
            align_corners=align_corners,
            loss_decode=loss_decode,
            **kwargs)
        self.merges = nn.ModuleList()
        running = self.in_channels[-1]
        for skip in reversed(self.in_channels[:-1]):
            self.merges.append(
                nn.Sequential(
                    ConvModule(
                        running + skip,
                        channels,
                        3,
                        padding=1,
                        conv_cfg=self.conv_cfg,
                        norm_cfg=self.norm_cfg,
                        act_cfg=self.act_cfg),
                    ConvModule(
                        channels,
                        channels,
                        3,
                        padding=1,
                        conv_cfg=self.conv_cfg,
                        norm_cfg=self.norm_cfg,
                        act_cfg=self.act_cfg)))
            running = channels
        self.fusions: Optional[nn.ModuleDict] = None
        if fusion is None:
            if fusion_merges is not None:
                raise ValueError(f'LAVTHead: fusion_merges={fusion_merges!r} '
                                 f'needs a fusion config')
            return
        if 'lang_channels' not in fusion or 'vis_channels' in fusion:
            raise ValueError(
                f'LAVTHead: fusion must set lang_channels (the text '
                f'encoder width) and not vis_channels (it is channels='
                f'{channels}), got {dict(fusion)}')
        num_merges = len(self.merges)
        if fusion_merges is None:
            fusion_merges = range(num_merges)
        merges = list(fusion_merges)
        if (not merges or len(set(merges)) != len(merges) or any(
                not isinstance(i, int) or not 0 <= i < num_merges
                for i in merges)):
            raise ValueError(
                f'LAVTHead: fusion_merges must be distinct merge indices in '
                f'[0, {num_merges}), got {fusion_merges!r}')
        # keyed by merge index: the state-dict names say which merge
        # (``fusions.1.*``) whatever subset is fused
        self.fusions = nn.ModuleDict(
            (str(i), MODELS.build(dict(fusion, vis_channels=channels)))
            for i in sorted(merges))

    def _forward_feature(self, inputs: Sequence) -> Tensor:
        """The decoder's stride-4 features, before ``conv_seg``.

        Args:
            inputs (tuple): Backbone output ``(feats, lang, lang_mask)``;
                the language is used only by the optional ``fusion``.

        Returns:
            Tensor: ``(B, channels, H1, W1)`` at the size of the shallowest
            selected map (stride 4 for Swin).
        """
        feats, lang, lang_mask = self._split_inputs(inputs)
        for i, (feat, width) in enumerate(zip(feats, self.in_channels)):
            if feat.dim() != 4 or feat.shape[1] != width:
                raise ValueError(
                    f'LAVTHead: feature {i} (in_index {self.in_index[i]}) '
                    f'should be (B, {width}, H, W), got {tuple(feat.shape)}')
        x = feats[-1]
        for i, (merge, skip) in enumerate(zip(self.merges, reversed(feats[:-1]))):
            # F.interpolate, not mmseg's resize: its align_corners warning
            # would fire on every 15 -> 30 style upsampling.
            x = F.interpolate(
                x,
                size=skip.shape[2:],
                mode='bilinear',
                align_corners=self.align_corners)
            x = merge(torch.cat([x, skip], dim=1))
            if self.fusions is not None and str(i) in self.fusions:
                b, c, h, w = x.shape
                stream, _, _ = self.fusions[str(i)](
                    x.flatten(2).transpose(1, 2), (h, w), lang, lang_mask)
                x = stream.transpose(1, 2).reshape(b, c, h, w)
        return x

    def forward(self, inputs: Sequence) -> Tensor:
        """Decode the fused features.

        Args:
            inputs (tuple): Backbone output ``(feats, lang, lang_mask)``.

        Returns:
            Tensor: Logits ``(B, out_channels, H1, W1)`` at the size of the
            shallowest selected map (stride 4 for Swin).
        """
        return self.cls_seg(self._forward_feature(inputs))
