"""LangSwinTransformer: mmseg's Swin run stage by stage with fusions."""
import copy
from typing import List, Optional, Sequence, Tuple, Union

from mmengine.model import ModuleList
from mmengine.model.weight_init import (constant_init, trunc_normal_,
                                        trunc_normal_init)
from mmseg.models.backbones import SwinTransformer
from mmseg.models.backbones.swin import WindowMSA
from mmseg.registry import MODELS
import torch.nn.functional as F
from torch import Tensor, nn

from ..utils.swin_checkpoint import load_pretrained_swin

# Submodules that are not part of Swin: they are skipped by the Swin
# default init and by checkpoint loading, and initialise themselves.
_NON_SWIN = ('text_encoder', 'fusions')
_TEXT_ENCODER_API = ('embed', 'forward_stage', 'num_stages', 'hidden_size')


@MODELS.register_module()
class LangSwinTransformer(SwinTransformer):
    """Swin Transformer with a language encoder and one fusion per stage.

    The visual stages are mmseg's :class:`SwinTransformer` unchanged (same
    state-dict keys, so mmseg Swin checkpoints load as they are), driven
    stage by stage as LAVT does (``MultiModalSwinTransformer``)::

        x = patch_embed(img);  l = text_encoder.embed(ids, mask)
        for stage i:
            x = blocks_i(x)
            l = text_encoder.forward_stage(k, l)   # for each k placed at i
            x_stream, x_out, l = fusion_i(x, hw, l, mask)   # or x, x, l
            feats_i = norm_i(x_out)                # if out_norm
            x = downsample_i(x_stream)

    With one language stage (LAVT: the whole BERT) it runs before fusion 0;
    with four (MagNet) stage k runs before fusion k. When every language
    stage sits before fusion 0, the encoder is called once as
    ``text_encoder(ids, mask)`` instead (same result), so a frozen encoder
    can serve it from its cache (``BertLanguageEncoder(cache_size=...)``).

    Args:
        text_encoder (dict): Config of the language encoder (e.g.
            ``BertLanguageEncoder``), built with ``MODELS.build``. It must
            offer ``embed(ids, mask)``, ``forward_stage(k, hidden, mask)``,
            ``num_stages`` and ``hidden_size``.
        fusions (dict | Sequence[dict | None], optional): Fusion config per
            visual stage; a single dict is used for every stage, ``None``
            means no fusion (``x_stream = x_out = x``). ``vis_channels``
            (the stage width) and ``lang_channels`` (the text encoder's
            ``hidden_size``) are filled in. Defaults to no fusion at all.
        lang_stage_positions (Sequence[int], optional): Visual stage before
            whose fusion each language stage runs; sorted, one per language
            stage. Defaults to ``[0]`` for a one-stage text encoder and
            ``[0, 1, ..., n-1]`` when it has as many stages as Swin.
        out_norm (bool): Apply Swin's ``norm{i}`` to each fusion output
            before returning it (LAVT). False returns un-normed features
            (MagNet's decoder input). Defaults to True.
        patch_embed (dict, optional): Config of a module that replaces
            Swin's 4x4 patchify convolution (e.g. ``ConvPatchEmbed``, the
            tiny configs' stem); ``out_channels`` is filled in with
            ``embed_dims`` and its ``patch_size`` must equal Swin's. A
            pretrained Swin's ``patch_embed.*`` weights then do not load
            (reported). Defaults to None (Swin's own).
        **kwargs: Arguments of mmseg's ``SwinTransformer`` (``embed_dims``,
            ``depths``, ``num_heads``, ``window_size``, ``drop_path_rate``,
            ``out_indices``, ``init_cfg``, ...). ``init_cfg`` may be None or
            ``dict(type='Pretrained', checkpoint=PATH[, prefix=...])``;
            official Microsoft checkpoints are converted while loading.
    """

    def __init__(self,
                 text_encoder: dict,
                 fusions: Union[dict, Sequence[Optional[dict]], None] = None,
                 lang_stage_positions: Optional[Sequence[int]] = None,
                 out_norm: bool = True,
                 patch_embed: Optional[dict] = None,
                 **kwargs) -> None:
        self._check_init_cfg(kwargs.get('init_cfg'))
        super().__init__(**kwargs)
        num_visual = len(self.stages)
        # the patch grid the absolute position table (if any) is learnt for, as mmseg's Swin sizes it
        pretrain = kwargs.get('pretrain_img_size', 224)
        pretrain = (pretrain, pretrain) if isinstance(pretrain, int) else tuple(pretrain)
        patch = kwargs.get('patch_size', 4)
        self.pretrain_img_size_patches = (pretrain[0] // patch, pretrain[1] // patch)
        if patch_embed is not None:
            # width and stride of the Swin patchify being replaced
            self._replace_patch_embed(
                patch_embed, int(self.num_features[0]),
                int(self.patch_embed.projection.stride[0]))

        if not isinstance(text_encoder, dict):
            raise TypeError(f'LangSwinTransformer: text_encoder must be a '
                            f'config dict, got {type(text_encoder).__name__}')
        self.text_encoder = MODELS.build(text_encoder)
        lacking = [a for a in _TEXT_ENCODER_API
                   if not hasattr(self.text_encoder, a)]
        if lacking:
            raise TypeError(f'LangSwinTransformer: text encoder '
                            f'{type(self.text_encoder).__name__} lacks '
                            f'{lacking} (needs {list(_TEXT_ENCODER_API)})')
        self.lang_stage_positions = self._check_positions(
            lang_stage_positions, int(self.text_encoder.num_stages),
            num_visual)

        fusion_cfgs = self._expand_fusions(fusions, num_visual)
        lang_channels = int(self.text_encoder.hidden_size)
        # None entries keep the ModuleList index equal to the stage index, so
        # fusion keys read ``fusions.<stage>.*`` whatever stages have one.
        self.fusions = ModuleList()
        for i, cfg in enumerate(fusion_cfgs):
            if cfg is None:
                self.fusions.append(None)
                continue
            cfg = copy.deepcopy(dict(cfg))
            for name, value in (('vis_channels', self.num_features[i]),
                                ('lang_channels', lang_channels)):
                if cfg.get(name, value) != value:
                    raise ValueError(
                        f'LangSwinTransformer: fusions[{i}] sets {name}='
                        f'{cfg[name]} but stage {i} needs {value}')
                cfg[name] = value
            self.fusions.append(MODELS.build(cfg))
        self.out_norm = bool(out_norm)

    def _replace_patch_embed(self, cfg: dict, embed_dims: int,
                             patch_size: int) -> None:
        """Build ``cfg`` as the patch embedding and check its stride."""
        if not isinstance(cfg, dict):
            raise TypeError(f'LangSwinTransformer: patch_embed must be a '
                            f'config dict, got {type(cfg).__name__}')
        cfg = copy.deepcopy(dict(cfg))
        if cfg.get('out_channels', embed_dims) != embed_dims:
            raise ValueError(
                f'LangSwinTransformer: patch_embed sets out_channels='
                f'{cfg["out_channels"]} but embed_dims is {embed_dims}')
        cfg['out_channels'] = embed_dims
        module = MODELS.build(cfg)
        if getattr(module, 'patch_size', None) != patch_size:
            raise ValueError(
                f'LangSwinTransformer: patch_embed {cfg["type"]} has patch '
                f'size {getattr(module, "patch_size", None)}; Swin here '
                f'uses {patch_size}')
        self.patch_embed = module

    @staticmethod
    def _check_init_cfg(init_cfg) -> None:
        """Accept only None or a Pretrained config with a checkpoint."""
        if init_cfg is None:
            return
        if (not isinstance(init_cfg, dict)
                or init_cfg.get('type') != 'Pretrained'
                or not init_cfg.get('checkpoint')):
            raise ValueError(
                f"LangSwinTransformer: init_cfg must be None or "
                f"dict(type='Pretrained', checkpoint=PATH), got {init_cfg!r}")

    @staticmethod
    def _check_positions(positions: Optional[Sequence[int]], num_lang: int,
                         num_visual: int) -> Tuple[int, ...]:
        """Validate (or choose) where the language stages run.

        Args:
            positions (Sequence[int], optional): User setting.
            num_lang (int): Stages of the text encoder.
            num_visual (int): Stages of Swin.

        Returns:
            tuple[int]: One visual stage index per language stage.
        """
        if positions is None:
            if num_lang == 1:
                return (0, )
            if num_lang == num_visual:
                return tuple(range(num_visual))
            raise ValueError(
                f'LangSwinTransformer: the text encoder has {num_lang} '
                f'stages and Swin {num_visual}; set lang_stage_positions '
                f'(one visual stage index per language stage)')
        positions = tuple(positions)
        if len(positions) != num_lang:
            raise ValueError(
                f'LangSwinTransformer: lang_stage_positions={list(positions)}'
                f' must have one entry per text encoder stage ({num_lang})')
        if any(not isinstance(p, int) or not 0 <= p < num_visual
               for p in positions):
            raise ValueError(
                f'LangSwinTransformer: lang_stage_positions={list(positions)}'
                f' must be stage indices in [0, {num_visual})')
        if list(positions) != sorted(positions):
            raise ValueError(
                f'LangSwinTransformer: lang_stage_positions={list(positions)}'
                f' must be sorted (language stages run in order)')
        return positions

    @staticmethod
    def _expand_fusions(fusions: Union[dict, Sequence[Optional[dict]], None],
                        num_visual: int) -> List[Optional[dict]]:
        """Turn the ``fusions`` argument into one config (or None) per stage.

        Args:
            fusions: A dict (repeated), a sequence or None.
            num_visual (int): Stages of Swin.

        Returns:
            list[dict | None]: One entry per stage.
        """
        if fusions is None:
            return [None] * num_visual
        if isinstance(fusions, dict):
            return [fusions] * num_visual
        fusions = list(fusions)
        if len(fusions) != num_visual:
            raise ValueError(f'LangSwinTransformer: fusions has '
                             f'{len(fusions)} entries but Swin has '
                             f'{num_visual} stages')
        for i, cfg in enumerate(fusions):
            if cfg is not None and not isinstance(cfg, dict):
                raise TypeError(f'LangSwinTransformer: fusions[{i}] must be '
                                f'a config dict or None, got '
                                f'{type(cfg).__name__}')
        return fusions

    def train(self, mode: bool = True) -> 'LangSwinTransformer':
        """Set train/eval mode, keeping frozen stages frozen.

        mmseg's ``SwinTransformer.train`` returns None, which breaks the
        ``model.eval()`` / ``model.train()`` chaining of ``nn.Module``.

        Args:
            mode (bool): Training mode. Defaults to True.

        Returns:
            LangSwinTransformer: ``self``.
        """
        super().train(mode)
        return self

    def _swin_modules(self):
        """Yield the modules of the Swin part (not text encoder, fusions)."""
        for name, child in self.named_children():
            if name not in _NON_SWIN:
                yield from child.modules()

    def init_weights(self) -> None:
        """Initialise Swin, then the fusions and the text encoder.

        Without ``init_cfg`` Swin gets mmseg's default init (truncated normal
        Linear, unit LayerNorm) plus the truncated-normal relative position
        tables of the official Swin, restricted to the Swin modules so that
        the text encoder's weights are not overwritten. With
        ``init_cfg=dict(type='Pretrained', checkpoint=...)`` the checkpoint
        (mmseg or official Microsoft names) is loaded into Swin and a report
        of missing / unexpected keys is logged. The fusions and the text
        encoder then run their own ``init_weights`` (the latter loads its
        own pretrained weights).
        """
        if self.init_cfg is None:
            if self.use_abs_pos_embed:
                trunc_normal_(self.absolute_pos_embed, std=0.02)
            for m in self._swin_modules():
                if isinstance(m, nn.Linear):
                    trunc_normal_init(m, std=.02, bias=0.)
                elif isinstance(m, nn.LayerNorm):
                    constant_init(m, val=1.0, bias=0.)
                elif isinstance(m, WindowMSA):
                    m.init_weights()
        else:
            load_pretrained_swin(
                self,
                self.init_cfg['checkpoint'],
                exclude_prefixes=tuple(f'{n}.' for n in _NON_SWIN),
                prefix=self.init_cfg.get('prefix'))
        for fusion in self.fusions:
            if fusion is not None and hasattr(fusion, 'init_weights'):
                fusion.init_weights()
        if hasattr(self.text_encoder, 'init_weights'):
            self.text_encoder.init_weights()
        self._is_init = True

    def abs_pos_embed_at(self, hw_shape: Tuple[int, int]) -> Tensor:
        """The absolute position table for a ``hw_shape`` patch grid.

        The table is learnt for ``pretrain_img_size / patch_size``; other
        input sizes get it resized bicubically (mmseg's Swin would fail on
        the shape mismatch), so a model trained at one size still runs at
        another (benchmarks, demos).

        Args:
            hw_shape (tuple[int, int]): Patch grid ``(H, W)`` of the input.

        Returns:
            Tensor: ``(1, H * W, C)``.
        """
        table = self.absolute_pos_embed
        grid = self.pretrain_img_size_patches
        if tuple(hw_shape) == grid:
            return table
        table = table.reshape(1, *grid, -1).permute(0, 3, 1, 2)
        table = F.interpolate(table, size=tuple(hw_shape), mode='bicubic', align_corners=False)
        return table.flatten(2).transpose(1, 2)

    def forward(self, img: Tensor, input_ids: Tensor,
                attention_mask: Tensor
                ) -> Tuple[List[Tensor], Tensor, Tensor]:
        """Encode an image batch together with its expressions.

        Args:
            img (Tensor): (B, 3, H, W) images.
            input_ids (Tensor): (B, L) token ids.
            attention_mask (Tensor): (B, L) 0/1 mask of real tokens.

        Returns:
            tuple: ``(feats, lang, lang_mask)``: ``feats`` is a list with one
            (B, C_i, H_i, W_i) map per index of ``out_indices``, ``lang`` the
            (B, L, Cl) language features after the last language stage and
            fusion, ``lang_mask`` the attention mask.
        """
        if input_ids.dim() != 2 or input_ids.shape != attention_mask.shape:
            raise ValueError(
                f'LangSwinTransformer: input_ids {tuple(input_ids.shape)} and '
                f'attention_mask {tuple(attention_mask.shape)} must both be '
                f'(B, L)')
        if input_ids.shape[0] != img.shape[0]:
            raise ValueError(
                f'LangSwinTransformer: {img.shape[0]} images but '
                f'{input_ids.shape[0]} token sequences')

        x, hw_shape = self.patch_embed(img)
        if self.use_abs_pos_embed:
            x = x + self.abs_pos_embed_at(hw_shape)
        x = self.drop_after_pos(x)
        if all(p == 0 for p in self.lang_stage_positions):
            # Every language stage runs before the first fusion (LAVT): one
            # call, which a frozen encoder may answer from its cache.
            lang = self.text_encoder(input_ids, attention_mask)
            next_lang = len(self.lang_stage_positions)
        else:
            lang = self.text_encoder.embed(input_ids, attention_mask)
            next_lang = 0
        outs = []
        for i, stage in enumerate(self.stages):
            for block in stage.blocks:
                x = block(x, hw_shape)
            while (next_lang < len(self.lang_stage_positions)
                   and self.lang_stage_positions[next_lang] == i):
                lang = self.text_encoder.forward_stage(next_lang, lang,
                                                       attention_mask)
                next_lang += 1
            fusion = self.fusions[i]
            if fusion is None:
                x_stream = x_out = x
            else:
                x_stream, x_out, lang = fusion(x, hw_shape, lang,
                                               attention_mask)
                if x_stream.shape != x.shape or x_out.shape != x.shape:
                    raise RuntimeError(
                        f'LangSwinTransformer: fusions[{i}] '
                        f'({type(fusion).__name__}) returned x_stream '
                        f'{tuple(x_stream.shape)} / x_out '
                        f'{tuple(x_out.shape)}; expected {tuple(x.shape)}')
            if i in self.out_indices:
                if self.out_norm:
                    x_out = getattr(self, f'norm{i}')(x_out)
                outs.append(
                    x_out.view(-1, *hw_shape, self.num_features[i]).permute(
                        0, 3, 1, 2).contiguous())
            if stage.downsample is not None:
                x, hw_shape = stage.downsample(x_stream, hw_shape)
            else:
                x = x_stream
        return outs, lang, attention_mask
