"""MagNet's Mask2Former-style decoder with one query and a sigmoid mask."""
import copy
from typing import Dict, List, Sequence, Tuple

import mmdet.models  # noqa: F401  (registers MSDeformAttnPixelDecoder)
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmdet.models.layers import (Mask2FormerTransformerDecoder,
                                 SinePositionalEncoding)
from mmengine.config import ConfigDict
from torch import Tensor

from mmseg.registry import MODELS
from mmseg.utils import ConfigType, OptConfigType, OptMultiConfig, SampleList
from .ris_decode_head import RISBaseDecodeHead

# The released MagNet decoder (docs: magnet_lavt.md §2.5): all four Swin
# levels enter a 4-layer deformable encoder with FFN 1024.
MAGNET_PIXEL_DECODER = dict(
    type='mmdet.MSDeformAttnPixelDecoder',
    strides=[4, 8, 16, 32],
    norm_cfg=dict(type='GN', num_groups=32),
    act_cfg=dict(type='ReLU'),
    encoder=dict(
        num_layers=4,
        layer_cfg=dict(
            self_attn_cfg=dict(
                embed_dims=256,
                num_heads=8,
                num_levels=4,
                num_points=4,
                dropout=0.0,
                batch_first=True),
            ffn_cfg=dict(
                embed_dims=256,
                feedforward_channels=1024,
                num_fcs=2,
                ffn_drop=0.0,
                act_cfg=dict(type='ReLU', inplace=True)))),
    positional_encoding=dict(num_feats=128, normalize=True))

# 9 post-norm layers: masked cross-attention -> self-attention -> FFN 2048.
MAGNET_TRANSFORMER_DECODER = dict(
    num_layers=9,
    layer_cfg=dict(
        self_attn_cfg=dict(
            embed_dims=256,
            num_heads=8,
            attn_drop=0.0,
            proj_drop=0.0,
            batch_first=True),
        cross_attn_cfg=dict(
            embed_dims=256,
            num_heads=8,
            attn_drop=0.0,
            proj_drop=0.0,
            batch_first=True),
        ffn_cfg=dict(
            embed_dims=256,
            feedforward_channels=2048,
            num_fcs=2,
            ffn_drop=0.0,
            act_cfg=dict(type='ReLU', inplace=True))),
    init_cfg=None)

# Eq. 15 of the MagNet paper: BCE 2.0, Dice 2.0 (CAL 0.5 below).
MAGNET_LOSS_DECODE = [
    dict(
        type='CrossEntropyLoss',
        use_sigmoid=True,
        avg_non_ignore=True,
        loss_weight=2.0,
        loss_name='loss_bce'),
    dict(type='ForegroundDiceLoss', loss_weight=2.0),
]
MAGNET_LOSS_CAL = dict(type='CrossModalAlignmentLoss', loss_weight=0.5)


@MODELS.register_module()
class MagNetHead(RISBaseDecodeHead):
    """MagNet's mask decoder: deformable pixel decoder + one masked query.

    The architecture is Mask2Former's, as MagNet releases it:

    * **Pixel decoder** -- mmdet's ``MSDeformAttnPixelDecoder``. With
      ``encoder.layer_cfg.self_attn_cfg.num_levels`` equal to the number of
      input maps (4) every level, stride 4 included, is projected
      (``Conv1x1 + GN(32)``) into the deformable encoder, so no FPN level
      is built (mmdet builds one lateral/output conv per level *left out*
      of the encoder, here none). ``mask_features`` is its ``Conv1x1`` on
      the stride-4 encoder output; the ``num_outs`` coarsest encoder
      outputs (strides 32, 16, 8) feed the transformer decoder. No
      subclass is needed.
    * **Transformer decoder** -- mmdet's ``Mask2FormerTransformerDecoder``
      layers (masked cross-attention -> self-attention -> FFN, post-norm).
      A single learned query (content ``query_feat`` + position
      ``query_embed``) visits the ``num_transformer_feat_level`` levels
      round-robin, coarse first; each level's keys get a sine position
      encoding plus a learned level embedding. Before every layer the
      current prediction, bilinearly resized to the level, masks the keys
      where ``sigmoid < 0.5``; a fully masked row is unmasked.
    * **Prediction** -- ``mask_embed`` (3-layer MLP) of the post-normed
      query, dotted with ``mask_features``: one logit map at stride 4.
      mmdet's ``Mask2FormerHead`` is not reused as a whole: it requires
      ``num_levels == num_transformer_feat_level`` (MagNet has 4 vs 3),
      has a class head MagNet ignores and a matcher-based loss. This loop
      is its ``forward`` minus the class branch.

    The decoder sees no language: the language reaches the mask only
    through the fused visual features. The language is used by the
    cross-modal alignment loss (CAL), whose text feature is
    ``T_avg = lang_proj(mean of the real tokens' features)``.

    Outputs. :meth:`forward` returns the final logits ``(B, 1, H/4, W/4)``,
    so :meth:`predict` (mmseg's) and the segmentor's tensor mode get a
    plain tensor. :meth:`forward_all` returns everything the losses need
    (final and intermediate logits, ``mask_features``, the language) from
    the same single pass; :meth:`loss` calls it once and hands the dict to
    :meth:`loss_by_feat`.

    Losses (paper eq. 15). ``loss_decode`` (default: sigmoid BCE and
    foreground Dice, weight 2.0 each) is applied to the logits
    **upsampled** bilinearly (``align_corners``) to the label size, as
    mmseg does and as Mask2Former's criterion scores full masks; ignored
    pixels count in neither. ``loss_cal`` gets ``mask_features`` (stride 4),
    the label **downsampled** to that size by nearest-neighbour sampling
    (ignored pixels stay ignored; see :meth:`cal_target` for which pixel)
    and ``T_avg``. A sentence with ``exist=False``
    has an all-zero label: BCE and Dice still apply (the mask must be
    empty), and CAL skips it by its own empty-positive rule. With
    ``deep_supervision`` the ``loss_decode`` terms are also applied to
    every intermediate prediction (``d0.*`` = the learned query before the
    first layer, ... ``d{n-1}.*``), as Mask2Former trains; the paper does
    not say MagNet did, so it is off by default. ``acc_seg`` is the pixel
    accuracy of ``sigmoid > threshold`` over non-ignored pixels (mmseg's
    top-1 ``accuracy`` is meaningless for one channel).

    The pixel decoder runs in float32 with autocast off, as MagNet's does
    (its deformable attention was not trusted in half precision).

    Args:
        in_channels (Sequence[int]): Widths of the selected maps, shallow to
            deep. Defaults to ``(128, 256, 512, 1024)`` (Swin-B).
        channels (int): Width of the pixel decoder, the queries and the
            mask features (MagNet: 256).
        num_classes (int): Must be 2. Defaults to 2.
        out_channels (int): Must be 1 (one sigmoid mask). Defaults to 1.
        threshold (float): Decision threshold on the sigmoid. Defaults to
            0.5 (MagNet).
        in_index (Sequence[int]): Which backbone maps to use, shallow to
            deep. Defaults to ``(0, 1, 2, 3)``.
        num_queries (int): Learned queries; must be 1 (one referent, one
            mask). Defaults to 1.
        num_transformer_feat_level (int): Levels the transformer decoder
            visits round-robin (the coarsest ones). Defaults to 3.
        pixel_decoder (dict): Pixel decoder config. ``in_channels``,
            ``feat_channels``, ``out_channels`` and ``num_outs`` are filled
            in from this head (setting them to other values is an error).
            Defaults to MagNet's (:data:`MAGNET_PIXEL_DECODER`).
        transformer_decoder (dict): ``Mask2FormerTransformerDecoder``
            kwargs. Defaults to MagNet's (:data:`MAGNET_TRANSFORMER_DECODER`).
        positional_encoding (dict): ``SinePositionalEncoding`` kwargs of the
            decoder keys; ``num_feats`` must be ``channels // 2``.
            Defaults to ``dict(num_feats=128, normalize=True)``.
        lang_channels (int): Width of the language features (CAL's
            ``lang_proj`` input). Defaults to 768 (BERT-base).
        loss_decode (dict | Sequence[dict]): Mask losses on the upsampled
            logits. Defaults to :data:`MAGNET_LOSS_DECODE`.
        loss_cal (dict, optional): Cross-modal alignment loss. None turns
            CAL off and builds no ``lang_proj`` (no unused parameters).
            Defaults to :data:`MAGNET_LOSS_CAL`.
        deep_supervision (bool): Also apply ``loss_decode`` to every
            intermediate prediction. Defaults to False.
        ignore_index (int): Label value that no loss counts. Defaults to
            255.
        align_corners (bool): ``align_corners`` of the logit resizing (loss
            and prediction). Defaults to True (MagNet's test-time upsampling).
        init_cfg (dict | list[dict], optional): Initialisation config; None
            (default) uses Mask2Former's scheme (see :meth:`init_weights`).

    Raises:
        ValueError: If a setting contradicts the design above (channel
            widths that disagree, ``num_queries != 1``, ``out_channels !=
            1``, more decoder levels than inputs, ...).
    """

    def __init__(self,
                 in_channels: Sequence[int] = (128, 256, 512, 1024),
                 channels: int = 256,
                 num_classes: int = 2,
                 out_channels: int = 1,
                 threshold: float = 0.5,
                 in_index: Sequence[int] = (0, 1, 2, 3),
                 num_queries: int = 1,
                 num_transformer_feat_level: int = 3,
                 pixel_decoder: ConfigType = MAGNET_PIXEL_DECODER,
                 transformer_decoder: ConfigType = MAGNET_TRANSFORMER_DECODER,
                 positional_encoding: ConfigType = dict(
                     num_feats=128, normalize=True),
                 lang_channels: int = 768,
                 loss_decode: ConfigType = MAGNET_LOSS_DECODE,
                 loss_cal: OptConfigType = MAGNET_LOSS_CAL,
                 deep_supervision: bool = False,
                 ignore_index: int = 255,
                 align_corners: bool = True,
                 init_cfg: OptMultiConfig = None) -> None:
        name = type(self).__name__
        if out_channels != 1:
            raise ValueError(f'{name}: the mask is one sigmoid map, so '
                             f'out_channels must be 1, got {out_channels!r}')
        if num_queries != 1:
            raise ValueError(
                f'{name}: a referring expression has one referent and the '
                f'head outputs its mask from one query, so num_queries must '
                f'be 1, got {num_queries!r}')
        if len(in_channels) != len(in_index):
            raise ValueError(
                f'{name}: in_channels={list(in_channels)} and '
                f'in_index={list(in_index)} differ in length')
        if not 1 <= num_transformer_feat_level <= len(in_channels):
            raise ValueError(
                f'{name}: num_transformer_feat_level must be in [1, '
                f'{len(in_channels)}] (the number of input maps), got '
                f'{num_transformer_feat_level!r}')
        super().__init__(
            list(in_channels),
            channels,
            num_classes=num_classes,
            out_channels=out_channels,
            threshold=threshold,
            in_index=list(in_index),
            input_transform='multiple_select',
            dropout_ratio=0.0,
            loss_decode=copy.deepcopy(loss_decode),
            ignore_index=ignore_index,
            align_corners=align_corners,
            init_cfg=init_cfg)
        # Logits are query . pixel products; a 1x1 classifier would be an
        # unused parameter (and an error under DDP).
        del self.conv_seg
        self.num_transformer_feat_level = num_transformer_feat_level
        self.deep_supervision = deep_supervision
        self.lang_channels = lang_channels

        self.pixel_decoder = MODELS.build(
            self._pixel_decoder_cfg(pixel_decoder))
        decoder_cfg = ConfigDict(copy.deepcopy(transformer_decoder))
        self.transformer_decoder = Mask2FormerTransformerDecoder(
            **decoder_cfg)
        if self.transformer_decoder.embed_dims != channels:
            raise ValueError(
                f'{name}: transformer_decoder embed_dims '
                f'({self.transformer_decoder.embed_dims}) must equal '
                f'channels ({channels})')
        self.num_heads = decoder_cfg.layer_cfg.cross_attn_cfg.num_heads
        pos_cfg = dict(positional_encoding)
        if pos_cfg.get('num_feats', 0) * 2 != channels:
            raise ValueError(
                f'{name}: positional_encoding.num_feats '
                f'({pos_cfg.get("num_feats")}) must be channels // 2 '
                f'({channels // 2}): the y and x halves are concatenated')
        self.decoder_positional_encoding = SinePositionalEncoding(**pos_cfg)
        self.query_feat = nn.Embedding(num_queries, channels)
        self.query_embed = nn.Embedding(num_queries, channels)
        # Index 0 = the coarsest decoder level (mmdet's order).
        self.level_embed = nn.Embedding(num_transformer_feat_level, channels)
        self.mask_embed = nn.Sequential(
            nn.Linear(channels, channels), nn.ReLU(inplace=True),
            nn.Linear(channels, channels), nn.ReLU(inplace=True),
            nn.Linear(channels, channels))
        if loss_cal is None:
            self.loss_cal = None
            self.lang_proj = None
        else:
            self.loss_cal = MODELS.build(copy.deepcopy(loss_cal))
            # ``proj`` of T_avg (MagNet's released ``lang_proj``).
            self.lang_proj = nn.Linear(lang_channels, channels)

    def _pixel_decoder_cfg(self, pixel_decoder: ConfigType) -> ConfigDict:
        """Fill the pixel decoder's widths from the head and check them.

        Args:
            pixel_decoder (dict): The user's config.

        Returns:
            ConfigDict: The config to build (attribute access is what mmdet's
            pixel decoder expects of ``encoder``).
        """
        name = type(self).__name__
        cfg = ConfigDict(copy.deepcopy(pixel_decoder))
        cfg.setdefault('type', 'mmdet.MSDeformAttnPixelDecoder')
        fill = dict(
            in_channels=list(self.in_channels),
            feat_channels=self.channels,
            out_channels=self.channels,
            num_outs=self.num_transformer_feat_level)
        for key, value in fill.items():
            given = cfg.get(key)
            if given is not None and (list(given) if isinstance(
                    given, (list, tuple)) else given) != value:
                raise ValueError(
                    f'{name}: pixel_decoder.{key}={given!r} disagrees with '
                    f'the head ({value!r}); leave it out, the head sets it')
            cfg[key] = value
        strides = cfg.get('strides')
        if strides is not None and len(strides) != len(self.in_channels):
            raise ValueError(
                f'{name}: pixel_decoder.strides={list(strides)} needs one '
                f'stride per input map ({len(self.in_channels)})')
        attn = cfg.encoder.layer_cfg.self_attn_cfg
        if attn.embed_dims != self.channels:
            raise ValueError(
                f'{name}: pixel_decoder encoder embed_dims '
                f'({attn.embed_dims}) must equal channels ({self.channels})')
        if not (self.num_transformer_feat_level <= attn.num_levels <= len(
                self.in_channels)):
            raise ValueError(
                f'{name}: pixel_decoder encoder num_levels must be in '
                f'[{self.num_transformer_feat_level}, '
                f'{len(self.in_channels)}] (decoder levels .. input maps; '
                f'MagNet: all {len(self.in_channels)}), got '
                f'{attn.num_levels!r}')
        return cfg

    def init_weights(self) -> None:
        """Mask2Former's initialisation unless an ``init_cfg`` is given.

        The pixel decoder applies mmdet's scheme (Xavier input projections,
        deformable-attention defaults, normal level embedding) and every
        matrix of the transformer decoder is Xavier-normal, as in mmdet's
        ``Mask2FormerHead``; embeddings, ``mask_embed`` and ``lang_proj``
        keep PyTorch's defaults.
        """
        if self.init_cfg is not None:
            super().init_weights()
            return
        self.pixel_decoder.init_weights()
        for p in self.transformer_decoder.parameters():
            if p.dim() > 1:
                nn.init.xavier_normal_(p)

    # ------------------------------------------------------------ forward
    def _check_feats(self, feats: List[Tensor]) -> None:
        """Raise a clear error for maps of the wrong width or rank."""
        for i, (feat, width) in enumerate(zip(feats, self.in_channels)):
            if feat.dim() != 4 or feat.shape[1] != width:
                raise ValueError(
                    f'{type(self).__name__}: feature {i} (in_index '
                    f'{self.in_index[i]}) should be (B, {width}, H, W), got '
                    f'{tuple(feat.shape)}')

    def _predict_mask(self, query: Tensor, mask_features: Tensor,
                      attn_size: Tuple[int, int]) -> Tuple[Tensor, Tensor]:
        """Mask logits of the current query and the next attention mask.

        Args:
            query (Tensor): Queries ``(B, Q, C)``.
            mask_features (Tensor): ``(B, C, H, W)``.
            attn_size (tuple[int, int]): Size of the level attended next.

        Returns:
            tuple[Tensor, Tensor]: Logits ``(B, Q, H, W)`` and the boolean
            cross-attention mask ``(B * num_heads, Q, h * w)`` (True = may
            not attend), detached.
        """
        embed = self.mask_embed(self.transformer_decoder.post_norm(query))
        logits = torch.einsum('bqc,bchw->bqhw', embed, mask_features)
        attn = F.interpolate(
            logits, size=attn_size, mode='bilinear', align_corners=False)
        attn = attn.flatten(2).sigmoid() < 0.5
        attn = attn.repeat_interleave(self.num_heads, dim=0)
        # A query that would see nothing attends everywhere instead.
        attn = attn & ~attn.all(dim=-1, keepdim=True)
        return logits, attn.detach()

    def forward_all(self, inputs: Sequence) -> Dict[str, object]:
        """One decoding pass with everything the losses need.

        Args:
            inputs (tuple): Backbone output ``(feats, lang, lang_mask)``.

        Returns:
            dict: ``mask_logits`` (Tensor ``(B, 1, H/4, W/4)``, the final
            prediction), ``aux_mask_logits`` (list of ``num_layers``
            tensors of the same shape: the learned query's prediction
            before the first layer, then after each layer but the last),
            ``mask_features`` (Tensor ``(B, channels, H/4, W/4)``, float32),
            ``lang`` and ``lang_mask`` (as given).
        """
        feats, lang, lang_mask = self._split_inputs(inputs)
        self._check_feats(feats)
        batch = feats[0].shape[0]
        with torch.autocast(device_type=feats[0].device.type, enabled=False):
            mask_features, memories = self.pixel_decoder(
                [f.float() for f in feats])

        keys, key_pos = [], []
        for i, memory in enumerate(memories):  # coarse to fine
            keys.append(
                memory.flatten(2).transpose(1, 2) +
                self.level_embed.weight[i].view(1, 1, -1))
            no_padding = memory.new_zeros(
                (batch, ) + memory.shape[-2:], dtype=torch.bool)
            key_pos.append(
                self.decoder_positional_encoding(no_padding).flatten(
                    2).transpose(1, 2))
        query = self.query_feat.weight.unsqueeze(0).expand(batch, -1, -1)
        query_pos = self.query_embed.weight.unsqueeze(0).expand(batch, -1, -1)

        levels = self.num_transformer_feat_level
        logits, attn_mask = self._predict_mask(query, mask_features,
                                               memories[0].shape[-2:])
        predictions = [logits]
        for i, layer in enumerate(self.transformer_decoder.layers):
            level = i % levels
            query = layer(
                query=query,
                key=keys[level],
                value=keys[level],
                query_pos=query_pos,
                key_pos=key_pos[level],
                cross_attn_mask=attn_mask,
                key_padding_mask=None)
            logits, attn_mask = self._predict_mask(
                query, mask_features, memories[(i + 1) % levels].shape[-2:])
            predictions.append(logits)
        return dict(
            mask_logits=predictions[-1],
            aux_mask_logits=predictions[:-1],
            mask_features=mask_features,
            lang=lang,
            lang_mask=lang_mask)

    def forward(self, inputs: Sequence) -> Tensor:
        """Final mask logits.

        Args:
            inputs (tuple): Backbone output ``(feats, lang, lang_mask)``.

        Returns:
            Tensor: Logits ``(B, 1, H/4, W/4)`` (stride of the shallowest
            map).
        """
        return self.forward_all(inputs)['mask_logits']

    def text_embedding(self, lang: Tensor, lang_mask: Tensor) -> Tensor:
        """``T_avg``: mean of the real tokens' features, projected.

        Args:
            lang (Tensor): Language features ``(B, L, lang_channels)``.
            lang_mask (Tensor): 0/1 token mask ``(B, L)``; padding (0) is
                left out of the mean.

        Returns:
            Tensor: ``(B, channels)``.

        Raises:
            RuntimeError: If CAL is off (no ``lang_proj``).
            ValueError: On a width mismatch or an expression with no token.
        """
        name = type(self).__name__
        if self.lang_proj is None:
            raise RuntimeError(f'{name}: loss_cal is None, so the head has '
                               f'no lang_proj and no text embedding')
        if lang.dim() != 3 or lang.shape[-1] != self.lang_channels:
            raise ValueError(
                f'{name}: lang should be (B, L, {self.lang_channels}) '
                f'(lang_channels), got {tuple(lang.shape)}')
        if lang_mask.shape != lang.shape[:2]:
            raise ValueError(f'{name}: lang_mask {tuple(lang_mask.shape)} '
                             f'does not match lang {tuple(lang.shape)}')
        weights = (lang_mask > 0).to(lang.dtype)
        counts = weights.sum(dim=1, keepdim=True)
        if (counts == 0).any():
            empty = (counts[:, 0] == 0).nonzero().flatten().tolist()
            raise ValueError(f'{name}: samples {empty} have no real token '
                             f'in lang_mask')
        mean = (lang * weights.unsqueeze(-1)).sum(dim=1) / counts
        return self.lang_proj(mean)

    # ------------------------------------------------------------ losses
    def loss(self, inputs: Sequence, batch_data_samples: SampleList,
             train_cfg: ConfigType) -> dict:
        """Decode once and compute the losses.

        Args:
            inputs (tuple): Backbone output ``(feats, lang, lang_mask)``.
            batch_data_samples (list[SegDataSample]): Samples with
                ``gt_sem_seg``.
            train_cfg (dict): Unused (mmseg's signature).

        Returns:
            dict[str, Tensor]: See :meth:`loss_by_feat`.
        """
        return self.loss_by_feat(self.forward_all(inputs), batch_data_samples)

    def _mask_losses(self, logits: Tensor, label: Tensor) -> dict:
        """``loss_decode`` on logits upsampled to the label size.

        Args:
            logits (Tensor): ``(N, 1, h, w)``.
            label (Tensor): ``(N, H, W)``.

        Returns:
            dict[str, Tensor]: One entry per loss name.
        """
        logits = F.interpolate(
            logits,
            size=label.shape[-2:],
            mode='bilinear',
            align_corners=self.align_corners)
        losses = dict()
        for loss_decode in self._losses():
            value = loss_decode(
                logits, label, ignore_index=self.ignore_index)
            name = loss_decode.loss_name
            losses[name] = losses[name] + value if name in losses else value
        return losses

    def _source_index(self, out_size: int, in_size: int,
                      device: torch.device) -> Tensor:
        """Label row (or column) that each mask-feature row lies on.

        The position follows the bilinear resizing of the mask loss: with
        ``align_corners`` feature pixel ``i`` sits on label pixel ``i * (H -
        1) / (h - 1)`` (first and last pixels coincide), otherwise on ``(i +
        0.5) * H / h - 0.5`` (pixel centres; ``4i + 1.5`` at stride 4). The
        nearest label pixel is taken, ties rounded up.
        """
        i = torch.arange(out_size, device=device, dtype=torch.float64)
        if self.align_corners:
            pos = i * ((in_size - 1) / max(out_size - 1, 1))
        else:
            pos = (i + 0.5) * (in_size / out_size) - 0.5
        return torch.floor(pos + 0.5).clamp(0, in_size - 1).long()

    def cal_target(self, seg_label: Tensor, size: Sequence[int]) -> Tensor:
        """Labels at the mask-feature size by nearest-neighbour sampling.

        Each mask-feature pixel takes the label of the pixel the mask loss
        pairs it with (:meth:`_source_index`), so CAL and BCE / Dice agree on
        where the referent is. ``F.interpolate(mode='nearest')`` would read
        the top-left pixel of every 4x4 block instead, 1.5 pixels (up to 3
        at the far edge under ``align_corners``) away.

        Args:
            seg_label (Tensor): ``(N, H, W)`` labels in {0, 1,
                ``ignore_index``}.
            size (Sequence[int]): ``(h, w)`` of the mask features.

        Returns:
            Tensor: ``(N, h, w)`` labels, same dtype; every value is one
            of the input's (ignored pixels stay ignored).
        """
        rows = self._source_index(size[0], seg_label.shape[-2],
                                  seg_label.device)
        cols = self._source_index(size[1], seg_label.shape[-1],
                                  seg_label.device)
        return seg_label[:, rows][:, :, cols]

    def loss_by_feat(self, outputs: Dict[str, object],
                     batch_data_samples: SampleList) -> dict:
        """BCE + Dice (+ deep supervision) + CAL, and ``acc_seg``.

        Args:
            outputs (dict): :meth:`forward_all`'s output (one decoding
                pass; a plain logits tensor lacks the mask features).
            batch_data_samples (list[SegDataSample]): Samples with
                ``gt_sem_seg`` (0 background, 1 referent, ``ignore_index``).

        Returns:
            dict[str, Tensor]: ``loss_decode``'s names (default
            ``loss_bce``, ``loss_dice``), ``loss_cal``'s name when CAL is
            on, ``d{i}.<name>`` per intermediate prediction with
            ``deep_supervision``, and ``acc_seg`` (percent).
        """
        name = type(self).__name__
        if not isinstance(outputs, dict) or 'mask_features' not in outputs:
            raise TypeError(
                f'{name}.loss_by_feat takes the dict of forward_all '
                f'(logits and mask features of one pass), got '
                f'{type(outputs).__name__}')
        seg_label = self._stack_batch_gt(batch_data_samples)[:, 0]
        values = seg_label.unique().tolist()
        bad = [v for v in values if v not in (0, 1, self.ignore_index)]
        if bad:
            raise ValueError(
                f'{name}: labels must be 0, 1 or ignore_index='
                f'{self.ignore_index}, got values {values}')

        logits = outputs['mask_logits']
        losses = self._mask_losses(logits, seg_label)
        if self.deep_supervision:
            for i, aux in enumerate(outputs['aux_mask_logits']):
                for key, value in self._mask_losses(aux, seg_label).items():
                    losses[f'd{i}.{key}'] = value
        if self.loss_cal is not None:
            mask_features = outputs['mask_features']
            target = self.cal_target(seg_label, mask_features.shape[-2:])
            text = self.text_embedding(outputs['lang'], outputs['lang_mask'])
            losses[self.loss_cal.loss_name] = self.loss_cal(
                mask_features, target, text, ignore_index=self.ignore_index)
        losses['acc_seg'] = self._accuracy(logits, seg_label)
        return losses

    def _accuracy(self, logits: Tensor, seg_label: Tensor) -> Tensor:
        """Percent of non-ignored pixels where the decision is right."""
        with torch.no_grad():
            logits = F.interpolate(
                logits,
                size=seg_label.shape[-2:],
                mode='bilinear',
                align_corners=self.align_corners)
            pred = self.logits_to_mask(logits)
            valid = seg_label != self.ignore_index
            correct = (pred[valid] == seg_label[valid]).float()
            if correct.numel() == 0:
                return logits.new_zeros(())
            return correct.mean() * 100.0
