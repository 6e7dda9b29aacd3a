"""LAVT's pixel-word attention module (PWAM) with its language gate."""
from typing import Sequence, Tuple

import torch.nn as nn
from mmengine.model import BaseModule
from torch import Tensor

from mmseg.registry import MODELS
from mmseg.utils import ConfigType, OptConfigType

from ..utils.fusion import check_fusion_inputs
from .gates import TanhGate

# Additive attention bias of padded words. Finite on purpose: it survives
# fp16 (max 65504) and being added twice, unlike ``finfo.min``; exp(-1e4)
# is exactly 0 in float32 / float16, so padded words get zero weight.
MASK_BIAS = -1e4


@MODELS.register_module()
class PWAM(BaseModule):
    """Pixel-word attention and language gate of one visual stage (LAVT).

    Every pixel attends to the words of its sentence; the result modulates a
    projection of the pixel itself (Yang et al., "LAVT: Language-Aware
    Vision Transformer for Referring Image Segmentation", CVPR 2022):

    .. code:: text

        vis   = GELU(Conv1x1(x))                                  (B, C, HW)
        q     = InstanceNorm(Conv1x1(x))                 normalised over HW
        k, v  = Conv1x1(lang) * mask                     Cl -> C, per word
        attn  = softmax_words(q k * d^-0.5 + (1 - mask) * -1e4)
        out   = InstanceNorm(Conv1x1(attn v))
        r     = GELU(Conv1x1(vis * out))
        x_stream = x + gate(r) * r,   x_out = r,   lang unchanged
                          (x_out = x_stream with output='stream')

    ``d`` is the per-head width (``C / num_heads``); with LAVT's single head
    it is ``C``, i.e. LAVT's ``C^-0.5``. Padded words (``lang_mask == 0``)
    have zero keys and values *and* a ``-1e4`` bias, so nothing about their
    embeddings reaches the output (not even through the softmax
    normaliser). The language stream is returned unchanged: LAVT fuses on
    the image side only.

    Only the fusion interface of ``docs/design.md`` is implemented here; the
    backbone applies its ``norm{i}`` to ``x_out`` for the decoder and
    patch-merges ``x_stream``.

    Args:
        vis_channels (int): Visual width ``C`` of the stage (128 / 256 / 512 /
            1024 for Swin-B).
        lang_channels (int): Language width ``Cl`` (768 for BERT-base).
        num_heads (int): Attention heads; must divide ``vis_channels``.
            Defaults to 1 (LAVT).
        dropout (float): Dropout after the two GELUs. Defaults to 0.0 (LAVT's
            ``fusion_drop``).
        gate_act_cfg (dict): Activation inside the gate. Defaults to
            ``dict(type='ReLU')`` (LAVT).
        gate_init (str): ``init_mode`` of the :class:`TanhGate`:
            ``'zero_last'`` (default: the gate starts at exactly 0, so the
            pretrained Swin stream is untouched at the first step) or
            ``'trunc_normal'`` (the released LAVT behaviour, where the zero
            init was overwritten by a std-0.02 init).
        output (str): What goes to the decoder: ``'fused'`` (default, LAVT:
            ``x_out = r``, features the sentence has already gated) or
            ``'stream'`` (``x_out = x_stream``: the visual features of every
            object plus the gated residual, for a decoder that fuses the
            language itself, e.g. ``LAVTHead(fusion=...)``).
        init_cfg (dict, optional): mmengine init config. Defaults to None
            (PyTorch's default init of the 1x1 convolutions, as in LAVT).

    Raises:
        ValueError: On non-positive widths, a head count that does not divide
            ``vis_channels``, a dropout outside ``[0, 1)`` or an unknown
            ``output``.
    """

    def __init__(self,
                 vis_channels: int,
                 lang_channels: int,
                 num_heads: int = 1,
                 dropout: float = 0.0,
                 gate_act_cfg: ConfigType = dict(type='ReLU'),
                 gate_init: str = 'zero_last',
                 output: str = 'fused',
                 init_cfg: OptConfigType = None) -> None:
        super().__init__(init_cfg=init_cfg)
        for name, value in (('vis_channels', vis_channels),
                            ('lang_channels', lang_channels),
                            ('num_heads', num_heads)):
            if not isinstance(value, int) or value <= 0:
                raise ValueError(
                    f'PWAM: {name} must be a positive int, got {value!r}')
        if vis_channels % num_heads != 0:
            raise ValueError(f'PWAM: num_heads={num_heads} does not divide '
                             f'vis_channels={vis_channels}')
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f'PWAM: dropout must be in [0, 1), got '
                             f'{dropout!r}')
        if output not in ('fused', 'stream'):
            raise ValueError(f"PWAM: output must be 'fused' or 'stream', got {output!r}")
        self.output = output
        self.vis_channels = vis_channels
        self.lang_channels = lang_channels
        self.num_heads = num_heads
        self.scale = (vis_channels // num_heads)**-0.5

        c = vis_channels
        # 1x1 Conv1d (not Linear) on channels-first maps, as in LAVT, so the
        # parameter shapes match its checkpoints.
        self.vis_proj = nn.Sequential(
            nn.Conv1d(c, c, 1), nn.GELU(), nn.Dropout(dropout))
        self.query_proj = nn.Sequential(
            nn.Conv1d(c, c, 1), nn.InstanceNorm1d(c))
        self.key_proj = nn.Conv1d(lang_channels, c, 1)
        self.value_proj = nn.Conv1d(lang_channels, c, 1)
        self.out_proj = nn.Sequential(
            nn.Conv1d(c, c, 1), nn.InstanceNorm1d(c))
        self.mm_proj = nn.Sequential(
            nn.Conv1d(c, c, 1), nn.GELU(), nn.Dropout(dropout))
        self.gate = TanhGate(c, act_cfg=gate_act_cfg, init_mode=gate_init)

    def _check_inputs(self, x: Tensor, hw: Sequence[int], lang: Tensor,
                      lang_mask: Tensor) -> None:
        """Raise a ValueError naming the argument whose shape is wrong."""
        check_fusion_inputs('PWAM', x, hw, lang, lang_mask,
                            self.vis_channels, self.lang_channels)

    def multimodal_features(self, x: Tensor, lang: Tensor,
                            lang_mask: Tensor) -> Tensor:
        """Compute LAVT's multimodal features ``r`` (before the gate).

        Args:
            x (Tensor): Visual tokens ``(B, HW, C)``.
            lang (Tensor): Word features ``(B, L, Cl)``.
            lang_mask (Tensor): 1 for real words, 0 for padding ``(B, L)``.

        Returns:
            Tensor: ``r`` of shape ``(B, HW, C)``.
        """
        b, n, c = x.shape
        heads, d = self.num_heads, c // self.num_heads
        mask = lang_mask.to(x.dtype)
        num_words = lang.shape[1]

        x_cf = x.transpose(1, 2)  # (B, C, HW)
        vis = self.vis_proj(x_cf)
        query = self.query_proj(x_cf)
        lang_cf = lang.transpose(1, 2)  # (B, Cl, L)
        key = self.key_proj(lang_cf) * mask[:, None, :]
        value = self.value_proj(lang_cf) * mask[:, None, :]

        query = query.reshape(b, heads, d, n).transpose(2, 3)  # (B,h,HW,d)
        key = key.reshape(b, heads, d, num_words)  # (B, h, d, L)
        value = value.reshape(b, heads, d, num_words).transpose(2, 3)
        logits = (query @ key) * self.scale  # (B, h, HW, L)
        logits = logits + ((1.0 - mask) * MASK_BIAS)[:, None, None, :]
        attn = logits.softmax(dim=-1)
        out = (attn @ value).transpose(2, 3).reshape(b, c, n)
        out = self.out_proj(out)
        return self.mm_proj(vis * out).transpose(1, 2)

    def forward(self, x: Tensor, hw: Sequence[int], lang: Tensor,
                lang_mask: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """Fuse one visual stage with the sentence.

        Args:
            x (Tensor): Visual tokens after the stage's blocks ``(B, HW, C)``.
            hw (tuple[int, int]): Spatial size ``(H, W)`` of ``x``.
            lang (Tensor): Word features ``(B, L, Cl)``.
            lang_mask (Tensor): Tokeniser attention mask ``(B, L)``, 1 for
                real words and 0 for padding (any dtype).

        Returns:
            tuple[Tensor, Tensor, Tensor]: ``x_stream = x + gate(r) * r``
            (continues through the backbone), ``x_out`` (for the decoder:
            ``r``, or ``x_stream`` with ``output='stream'``) and ``lang``
            unchanged.
        """
        self._check_inputs(x, hw, lang, lang_mask)
        r = self.multimodal_features(x, lang, lang_mask)
        x_stream = x + self.gate(r) * r
        return x_stream, (r if self.output == 'fused' else x_stream), lang
