"""MagNet's cross-modal alignment module (CAM), implemented from the paper."""
from collections import OrderedDict
from typing import Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import build_activation_layer, build_norm_layer
from mmengine.model import BaseModule
from mmengine.model.weight_init import constant_init, xavier_init
from torch import Tensor

from mmseg.registry import MODELS
from mmseg.utils import ConfigType, OptConfigType

from ..utils.fusion import check_fusion_inputs
from .pwam import MASK_BIAS

_GATE_INITS = ('zero_last', 'xavier')


class _BiCrossAttention(nn.Module):
    """Bidirectional cross-modal multi-head attention (X-MHA, GLIP-style).

    One pair of projections gives one logit matrix ``S = q_pix k_word^T /
    sqrt(d)`` per head; it is softmaxed over the words for the pixel queries
    and, transposed, over the pixels for the word queries. Padded words get
    an additive ``MASK_BIAS`` in the pixel direction (they receive zero
    weight); in the word direction a padded word's row is its own output
    only, which the caller discards, so real words never see it. There is no
    output projection: both outputs go straight into the 2-layer MLPs of
    eqs. 10-11, whose first linear layer would absorb it (bilinear upsampling
    and channel concatenation are linear and commute with it).

    Args:
        vis_channels (int): Width of the pixel tokens (and of the attention).
        lang_channels (int): Width of the word features.
        num_heads (int): Heads; must divide ``vis_channels``.
        attn_drop (float): Dropout on both attention maps.
    """

    def __init__(self, vis_channels: int, lang_channels: int, num_heads: int,
                 attn_drop: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = vis_channels // num_heads
        self.scale = self.head_dim**-0.5
        self.vis_proj = nn.Linear(vis_channels, vis_channels)
        self.lang_proj = nn.Linear(lang_channels, vis_channels)
        self.vis_value = nn.Linear(vis_channels, vis_channels)
        self.lang_value = nn.Linear(lang_channels, vis_channels)
        self.attn_drop = nn.Dropout(attn_drop)

    def _split(self, t: Tensor) -> Tensor:
        """(B, N, h*d) -> (B, h, N, d)."""
        b, n, _ = t.shape
        return t.view(b, n, self.num_heads, self.head_dim).transpose(1, 2)

    @staticmethod
    def _merge(t: Tensor) -> Tensor:
        """(B, h, N, d) -> (B, N, h*d)."""
        b, _, n, _ = t.shape
        return t.transpose(1, 2).reshape(b, n, -1)

    def forward(self, pix: Tensor, words: Tensor,
                word_bias: Tensor) -> Tuple[Tensor, Tensor]:
        """Attend pixels to words and words to pixels.

        Args:
            pix (Tensor): Pixel tokens ``(B, N, E)``.
            words (Tensor): Word features ``(B, L, Cl)``.
            word_bias (Tensor): Additive logit bias ``(B, L)``, ``MASK_BIAS``
                at padded words, 0 elsewhere.

        Returns:
            tuple[Tensor, Tensor]: Text-to-pixel output ``(B, N, E)`` (pixel
            queries) and pixel-to-text output ``(B, L, E)`` (word queries).
        """
        q = self._split(self.vis_proj(pix))  # (B, h, N, d)
        k = self._split(self.lang_proj(words))  # (B, h, L, d)
        logits = (q @ k.transpose(-1, -2)) * self.scale  # (B, h, N, L)
        attn_pix = (logits + word_bias.to(logits.dtype)[:, None, None, :]
                    ).softmax(dim=-1)
        attn_words = logits.transpose(-1, -2).softmax(dim=-1)  # (B,h,L,N)
        t2p = self.attn_drop(attn_pix) @ self._split(self.lang_value(words))
        p2t = self.attn_drop(attn_words) @ self._split(self.vis_value(pix))
        return self._merge(t2p), self._merge(p2t)


class _PyramidBranch(nn.Module):
    """One scale ``k`` of CAM: ``Pool_k`` -> ``MLP_k`` -> ``X-MHA_k`` -> Up.

    ``MLP_k`` (eq. 6) is the 3-layer per-token MLP ``Linear(C, r*C) -> norm
    -> Linear(r*C, C) -> act -> Linear(C, E)``. With ``scale=None`` nothing
    is pooled or upsampled: the branch works on the full-resolution tokens.

    Args:
        scale (int, optional): Output size ``k`` of the adaptive average
            pooling (``k x k``); None for the full-resolution branch.
        vis_channels (int): Stage width ``C``.
        lang_channels (int): Word width ``Cl``.
        embed_channels (int): Branch width ``E``.
        mlp_ratio (int): Hidden expansion ``r`` of ``MLP_k``.
        num_heads (int): Heads of the X-MHA.
        attn_drop (float): Attention dropout.
        norm_cfg (dict): Norm after the first layer of ``MLP_k``.
        act_cfg (dict): Activation after the second layer of ``MLP_k``.
        align_corners (bool): ``align_corners`` of the bilinear upsampling.
    """

    def __init__(self, scale: Optional[int], vis_channels: int,
                 lang_channels: int, embed_channels: int, mlp_ratio: int,
                 num_heads: int, attn_drop: float, norm_cfg: ConfigType,
                 act_cfg: ConfigType, align_corners: bool) -> None:
        super().__init__()
        self.scale = scale
        self.align_corners = align_corners
        hidden = mlp_ratio * vis_channels
        self.mlp = nn.Sequential(
            OrderedDict(
                fc1=nn.Linear(vis_channels, hidden),
                norm=build_norm_layer(norm_cfg, hidden)[1],
                fc2=nn.Linear(hidden, vis_channels),
                act=build_activation_layer(act_cfg),
                fc3=nn.Linear(vis_channels, embed_channels)))
        self.attn = _BiCrossAttention(embed_channels, lang_channels,
                                      num_heads, attn_drop)

    def forward(self, x: Tensor, hw: Tuple[int, int], words: Tensor,
                word_bias: Tensor) -> Tuple[Tensor, Tensor]:
        """Run the branch.

        Args:
            x (Tensor): Stage tokens ``(B, HW, C)``.
            hw (tuple[int, int]): ``(H, W)``.
            words (Tensor): Word features with padding zeroed ``(B, L, Cl)``.
            word_bias (Tensor): Padding bias ``(B, L)``.

        Returns:
            tuple[Tensor, Tensor]: ``Up(P^k_t2p)`` as tokens ``(B, HW, E)``
            and ``O^k_p2t`` ``(B, L, E)``.
        """
        if self.scale is None:
            t2p, p2t = self.attn(self.mlp(x), words, word_bias)
            return t2p, p2t
        b, _, c = x.shape
        h, w = hw
        pooled = F.adaptive_avg_pool2d(
            x.transpose(1, 2).reshape(b, c, h, w), self.scale)
        t2p, p2t = self.attn(
            self.mlp(pooled.flatten(2).transpose(1, 2)), words, word_bias)
        t2p = t2p.transpose(1, 2).reshape(b, -1, self.scale, self.scale)
        t2p = F.interpolate(
            t2p, size=(h, w), mode='bilinear',
            align_corners=self.align_corners)
        return t2p.flatten(2).transpose(1, 2), p2t


@MODELS.register_module()
class CAM(BaseModule):
    """Cross-modal alignment module of one stage (MagNet, eqs. 5-11).

    Implemented from the paper (Chng et al., "Mask Grounding for Referring
    Image Segmentation", CVPR 2024, Sec. 3.3). With the stage's pixels
    ``P`` (``x``) and words ``O`` (``lang``), for every pyramid scale ``k``:

    .. code:: text

        P^k               = MLP_k(Pool_k(P))                 (6)  k x k tokens
        O^k_p2t, P^k_t2p  = X-MHA_k(O, P^k)                  (7)
        O_p2t = Concat_k(O^k_p2t)          channels           (8)
        P_t2p = Concat_k(Up(P^k_t2p))      bilinear to H x W  (9)
        O_new = O + tanh(MLP_l(O_p2t))                        (10)
        P_new = P + tanh(MLP_v(P_t2p))                        (11)

    returned as ``x_stream = x_out = P_new`` (MagNet's decoder sees the
    fused stream; its backbone config sets ``out_norm=False``) and
    ``lang = O_new``.

    Choices where the paper is silent or ambiguous:

    - ``Pool_k`` is adaptive average pooling to ``k x k`` (any ``H, W``, also
      smaller than ``k``). ``MLP_k`` is ``Linear(C, 4C) -> LayerNorm ->
      Linear(4C, C) -> GELU -> Linear(C, E)`` per token, the layer sizes of
      the released code, with ``E = embed_channels`` (default ``C // 4``, the
      released per-scale width; with the 4 default scales the concatenation
      is ``C`` wide again).
    - ``X-MHA_k`` is GLIP's bidirectional attention (one logit matrix,
      softmaxed over the words for pixel queries and over the ``k^2`` pooled
      pixels for word queries) at width ``E``, without output projections
      (absorbed by ``MLP_v`` / ``MLP_l``). ``num_heads`` defaults to 1, the
      released configuration (``--mha 1 1 1 1``); the paper gives no count.
    - Padded words (``lang_mask == 0``) are zeroed before any projection and
      get a ``-1e4`` logit bias, so their embeddings reach no real output;
      their own language update is masked to 0 (``O_new = O`` there).
    - ``MLP_v`` / ``MLP_l`` are ``Linear(K*E, D) -> act -> Linear(D, D)``
      with ``D = C`` (image) or ``Cl`` (language). Eqs. 10-11 are
      implemented as printed: ``tanh`` of the MLP is added directly, with no
      extra multiplicative gate ``g(v) * v`` (that form is the released
      code's and LAVT's, see :class:`TanhGate`).
    - ``gate_init='zero_last'`` (default) zero-initialises the last layer of
      ``MLP_v`` and ``MLP_l``, so at the start ``P_new = P`` and ``O_new =
      O`` exactly (the pretrained Swin / BERT streams are untouched) while
      that last layer still receives gradients. All other Linear layers are
      Xavier-uniform with zero bias (GLIP's init of its X-MHA), LayerNorms
      (1, 0). Xavier rather than the transformer habit of std 0.02 because
      the chain pool -> MLP_k -> projections -> MLP has a single norm: at
      std 0.02 every layer shrinks the signal (by ~0.1-0.5 at these widths)
      and the fused update starts ~1e-4 of the stream.
    - ``pool_scales=()`` (Tab. 3(e) "None") keeps the bidirectional fusion
      but without pyramid pooling: a single branch at full resolution (no
      pooling, no upsampling; the words attend to all ``H*W`` pixels).

    Args:
        vis_channels (int): Stage width ``C`` (filled in by the backbone).
        lang_channels (int): Word width ``Cl`` (filled in by the backbone).
        pool_scales (Sequence[int]): Pyramid output sizes ``k``. Defaults to
            ``(1, 2, 3, 6)`` (the paper's). ``()`` = one full-resolution
            branch.
        embed_channels (int, optional): Per-branch width ``E``. Defaults to
            None (``max(vis_channels // 4, num_heads)``).
        mlp_ratio (int): Hidden expansion of ``MLP_k``. Defaults to 4.
        num_heads (int): Heads of each X-MHA; must divide ``E``. Defaults
            to 1.
        attn_drop (float): Dropout on the attention maps. Defaults to 0.
        align_corners (bool): Of the bilinear upsampling. Defaults to False.
        norm_cfg (dict): Norm inside ``MLP_k``. Defaults to
            ``dict(type='LN', eps=1e-6)``.
        act_cfg (dict): Activation of all MLPs. Defaults to
            ``dict(type='GELU')``.
        gate_init (str): ``'zero_last'`` (default, see above) or
            ``'xavier'`` (the last layers Xavier too, so the fusion changes
            the streams from the first step).
        init_cfg (dict, optional): mmengine init config; replaces the init
            described above when given. Defaults to None.

    Raises:
        ValueError: On non-positive widths, invalid scales, a head count
            that does not divide ``E``, a dropout outside ``[0, 1)`` or an
            unknown ``gate_init``.
    """

    def __init__(self,
                 vis_channels: int,
                 lang_channels: int,
                 pool_scales: Sequence[int] = (1, 2, 3, 6),
                 embed_channels: Optional[int] = None,
                 mlp_ratio: int = 4,
                 num_heads: int = 1,
                 attn_drop: float = 0.0,
                 align_corners: bool = False,
                 norm_cfg: ConfigType = dict(type='LN', eps=1e-6),
                 act_cfg: ConfigType = dict(type='GELU'),
                 gate_init: str = 'zero_last',
                 init_cfg: OptConfigType = None) -> None:
        super().__init__(init_cfg=init_cfg)
        for name, value in (('vis_channels', vis_channels),
                            ('lang_channels', lang_channels),
                            ('mlp_ratio', mlp_ratio),
                            ('num_heads', num_heads)):
            if not isinstance(value, int) or value <= 0:
                raise ValueError(
                    f'CAM: {name} must be a positive int, got {value!r}')
        pool_scales = tuple(pool_scales)
        for k in pool_scales:
            if not isinstance(k, int) or k <= 0:
                raise ValueError(f'CAM: pool_scales must be positive ints, '
                                 f'got {pool_scales!r}')
        if len(set(pool_scales)) != len(pool_scales):
            raise ValueError(f'CAM: pool_scales has repeated entries: '
                             f'{pool_scales!r}')
        if embed_channels is None:
            embed_channels = max(vis_channels // 4, num_heads)
        if not isinstance(embed_channels, int) or embed_channels <= 0:
            raise ValueError(f'CAM: embed_channels must be a positive int, '
                             f'got {embed_channels!r}')
        if embed_channels % num_heads != 0:
            raise ValueError(f'CAM: num_heads={num_heads} does not divide '
                             f'embed_channels={embed_channels}')
        if not 0.0 <= attn_drop < 1.0:
            raise ValueError(f'CAM: attn_drop must be in [0, 1), got '
                             f'{attn_drop!r}')
        if gate_init not in _GATE_INITS:
            raise ValueError(f'CAM: gate_init must be one of {_GATE_INITS}, '
                             f'got {gate_init!r}')
        self.vis_channels = vis_channels
        self.lang_channels = lang_channels
        self.pool_scales = pool_scales
        self.embed_channels = embed_channels
        self.num_heads = num_heads
        self.gate_init = gate_init

        scales = pool_scales if pool_scales else (None, )
        self.branches = nn.ModuleList(
            _PyramidBranch(k, vis_channels, lang_channels, embed_channels,
                           mlp_ratio, num_heads, attn_drop, norm_cfg,
                           act_cfg, align_corners) for k in scales)
        cat_channels = embed_channels * len(scales)
        self.vis_fuse = self._two_layer_mlp(cat_channels, vis_channels,
                                            act_cfg)
        self.lang_fuse = self._two_layer_mlp(cat_channels, lang_channels,
                                             act_cfg)
        self._default_init()

    @staticmethod
    def _two_layer_mlp(in_channels: int, out_channels: int,
                       act_cfg: ConfigType) -> nn.Sequential:
        """``Linear(in, out) -> act -> Linear(out, out)`` (eqs. 10-11)."""
        return nn.Sequential(
            OrderedDict(
                fc1=nn.Linear(in_channels, out_channels),
                act=build_activation_layer(act_cfg),
                fc2=nn.Linear(out_channels, out_channels)))

    def _default_init(self) -> None:
        """Xavier-uniform Linear, unit LayerNorm, then ``gate_init``."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                xavier_init(m, distribution='uniform', bias=0.)
            elif isinstance(m, nn.LayerNorm):
                constant_init(m, val=1.0, bias=0.)
        if self.gate_init == 'zero_last':
            # Only the last layer: the residual branches start at exactly 0
            # but fc2 still gets d(loss)/d(out) x hidden, so they learn.
            constant_init(self.vis_fuse.fc2, val=0., bias=0.)
            constant_init(self.lang_fuse.fc2, val=0., bias=0.)

    def init_weights(self) -> None:
        """Re-apply the default init (or the user's ``init_cfg`` if given).

        The backbone calls this after its own init, so a model-wide pass
        cannot silently replace the zero-initialised last layers.
        """
        if self.init_cfg is not None:
            super().init_weights()
        else:
            self._default_init()

    def _check_inputs(self, x: Tensor, hw: Sequence[int], lang: Tensor,
                      lang_mask: Tensor) -> None:
        """Raise a ValueError naming the argument whose shape is wrong."""
        check_fusion_inputs('CAM', x, hw, lang, lang_mask,
                            self.vis_channels, self.lang_channels)

    def forward(self, x: Tensor, hw: Sequence[int], lang: Tensor,
                lang_mask: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """Align one visual stage and the words in both directions.

        Args:
            x (Tensor): Visual tokens after the stage's blocks ``(B, HW, C)``.
            hw (tuple[int, int]): Spatial size ``(H, W)`` of ``x``.
            lang (Tensor): Word features ``(B, L, Cl)``.
            lang_mask (Tensor): Tokeniser attention mask ``(B, L)``, non-zero
                for real words (any dtype).

        Returns:
            tuple[Tensor, Tensor, Tensor]: ``x_stream`` (= ``P_new``, eq. 11)
            ``(B, HW, C)``, ``x_out`` (the same tensor) and the updated words
            ``O_new`` (eq. 10) ``(B, L, Cl)``; padded words are returned
            unchanged.
        """
        self._check_inputs(x, hw, lang, lang_mask)
        hw = (int(hw[0]), int(hw[1]))
        valid = lang_mask != 0
        # Zeroing padded words before any projection keeps their content
        # out of every output even if it is huge; the bias excludes them
        # from the pixels' softmax.
        words = lang.masked_fill(~valid[..., None], 0.)
        word_bias = (~valid).to(x.dtype) * MASK_BIAS
        t2p_parts, p2t_parts = [], []
        for branch in self.branches:
            t2p, p2t = branch(x, hw, words, word_bias)
            t2p_parts.append(t2p)
            p2t_parts.append(p2t)
        p_t2p = torch.cat(t2p_parts, dim=-1)  # (B, HW, K*E), eq. 9
        o_p2t = torch.cat(p2t_parts, dim=-1)  # (B, L, K*E), eq. 8
        x_new = x + torch.tanh(self.vis_fuse(p_t2p))
        lang_new = torch.where(valid[..., None],
                               lang + torch.tanh(self.lang_fuse(o_p2t)), lang)
        return x_new, x_new, lang_new
