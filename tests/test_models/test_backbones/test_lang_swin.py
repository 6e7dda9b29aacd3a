"""Tests of LangSwinTransformer and the official Swin checkpoint conversion.

References are independent of the code under test:

* the stage loop is checked against mmseg's own ``SwinTransformer.forward``
  (bit-identical), with forward pre-hooks on ``stages[i].downsample`` and
  ``norm{i}`` standing in for a fusion's ``x_stream`` / ``x_out``;
* official-format checkpoints are written by an inverse converter defined
  here (mmseg -> Microsoft names), and the patch-merging channel order is
  checked against a re-implementation of the official ``PatchMerging``
  (``cat([x0, x1, x2, x3])``);
* the Swin-B parameter count is computed from the architecture by hand.
"""
import argparse
import importlib.util
import logging
import os.path as osp
import re
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from mmengine.logging import MMLogger
from mmengine.model import BaseModule
from mmseg.models.backbones import SwinTransformer
from mmseg.models.utils.embed import PatchMerging
from mmseg.registry import MODELS
from torch import nn

from mmseg_ris.models.backbones import LangSwinTransformer
from mmseg_ris.models.utils import convert_official_swin, load_pretrained_swin

TINY = dict(
    embed_dims=16,
    depths=(2, 2, 2, 2),
    num_heads=(1, 2, 2, 4),
    window_size=4,
    drop_path_rate=0.1,
    pretrain_img_size=64)
HIDDEN = 8
CONVERTER = osp.join(
    osp.dirname(__file__), '..', '..', '..', 'tools', 'model_converters',
    'swin2mmseg_ris.py')
# Everything the fakes below do, in call order.
EVENTS = []


@MODELS.register_module(force=True)
class TinyStagedTextEncoder(BaseModule):
    """Stand-in for BertLanguageEncoder: an embedding and one Linear per stage.

    ``init_weights`` writes recognisable constants so tests can see that it
    ran and that Swin's init did not overwrite it.
    """

    def __init__(self, num_stages=1, hidden_size=HIDDEN, vocab_size=32,
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        self.num_stages = num_stages
        self.hidden_size = hidden_size
        self.embedding = nn.Embedding(vocab_size, hidden_size)
        self.layers = nn.ModuleList(
            nn.Linear(hidden_size, hidden_size) for _ in range(num_stages))
        self.init_calls = 0

    def init_weights(self):
        self.init_calls += 1
        nn.init.constant_(self.embedding.weight, 0.25)
        for layer in self.layers:
            nn.init.constant_(layer.weight, 0.5)
            nn.init.zeros_(layer.bias)

    def embed(self, input_ids, attention_mask):
        EVENTS.append(('embed', ))
        return self.embedding(input_ids)

    def forward_stage(self, k, hidden, attention_mask):
        EVENTS.append(('lang', k))
        update = torch.tanh(self.layers[k](hidden))
        return hidden + update * attention_mask[..., None].to(hidden.dtype)

    def forward(self, input_ids, attention_mask):
        hidden = self.embed(input_ids, attention_mask)
        for k in range(self.num_stages):
            hidden = self.forward_stage(k, hidden, attention_mask)
        return hidden


@MODELS.register_module(force=True)
class ShiftFusion(BaseModule):
    """Fake fusion: returns ``x + stream_shift`` (stream), ``x + out_shift``
    (output) and ``lang + lang_shift``."""

    def __init__(self, vis_channels, lang_channels, stream_shift=0.,
                 out_shift=0., lang_shift=0., init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        self.vis_channels = vis_channels
        self.lang_channels = lang_channels
        self.stream_shift = stream_shift
        self.out_shift = out_shift
        self.lang_shift = lang_shift
        # A parameter on the stream, so gradients can be checked.
        self.scale = nn.Parameter(torch.ones(1))
        self.init_calls = 0
        self.received_lang = None

    def init_weights(self):
        self.init_calls += 1

    def forward(self, x, hw, lang, lang_mask):
        EVENTS.append(('fusion', self.vis_channels, tuple(hw)))
        assert x.shape[-1] == self.vis_channels
        assert lang.shape[-1] == self.lang_channels
        self.received_lang = lang.detach().clone()
        return (x * self.scale + self.stream_shift, x + self.out_shift,
                lang + self.lang_shift)


class ListHandler(logging.Handler):

    def __init__(self):
        super().__init__(level=logging.DEBUG)
        self.records = []

    def emit(self, record):
        self.records.append(record)


@pytest.fixture
def log_records():
    logger = MMLogger.get_current_instance()
    handler = ListHandler()
    logger.addHandler(handler)
    yield handler.records
    logger.removeHandler(handler)


@pytest.fixture(autouse=True)
def clear_events():
    EVENTS.clear()
    yield
    EVENTS.clear()


# ----------------------------------------------------------------- helpers


def build_lang_swin(text_stages=1, **kwargs):
    cfg = dict(TINY)
    cfg.update(kwargs)
    return MODELS.build(
        dict(
            type='LangSwinTransformer',
            text_encoder=dict(
                type='TinyStagedTextEncoder', num_stages=text_stages),
            **cfg))


def random_swin(seed=0, **kwargs):
    """A tiny mmseg Swin with every parameter random (no symmetric values)."""
    cfg = dict(TINY)
    cfg.update(kwargs)
    torch.manual_seed(seed)
    swin = SwinTransformer(**cfg)
    with torch.no_grad():
        for p in swin.parameters():
            p.normal_(0, 0.2)
    swin.eval()  # mmseg's SwinTransformer.train() returns None
    return swin


def swin_part(model):
    return OrderedDict((k, v) for k, v in model.state_dict().items()
                       if not k.startswith(('text_encoder.', 'fusions.')))


def unfold_to_official(t):
    """mmseg patch-merging channel order -> official order.

    mmseg (nn.Unfold) stores channel c of neighbour k at ``c * 4 + k`` with
    k = (row, col) = (0,0), (0,1), (1,0), (1,1); the official model stores
    neighbour j at ``j * C + c`` with j = (0,0), (1,0), (0,1), (1,1).
    """
    *lead, last = t.shape
    per_neighbour = t.reshape(*lead, last // 4, 4).transpose(-1, -2)
    unfold_index_of_official = [0, 2, 1, 3]  # (1,0) is unfold's 2nd, ...
    return per_neighbour[..., unfold_index_of_official, :].reshape(t.shape)


def mmseg_to_official(swin, extras=True):
    """Write an mmseg Swin's state dict with Microsoft's names."""
    out = OrderedDict()
    for key, value in swin.state_dict().items():
        if re.match(r'norm\d+\.', key):
            continue  # the classifier has one final ``norm`` instead
        if key.startswith('stages.'):
            new = 'layers.' + key[len('stages.'):]
            new = new.replace('.attn.w_msa.', '.attn.')
            new = new.replace('.ffn.layers.0.0.', '.mlp.fc1.')
            new = new.replace('.ffn.layers.1.', '.mlp.fc2.')
            if '.downsample.' in key:
                value = unfold_to_official(value)
        elif key.startswith('patch_embed.projection.'):
            new = 'patch_embed.proj.' + key[len('patch_embed.projection.'):]
        else:
            new = key
        out[new] = value.clone()
    if extras:
        # What the released classifier carries besides the backbone.
        c_last = swin.num_features[-1]
        window = swin.stages[0].blocks[0].attn.window_size
        out['norm.weight'] = torch.randn(c_last)
        out['norm.bias'] = torch.randn(c_last)
        out['head.weight'] = torch.randn(10, c_last)
        out['head.bias'] = torch.randn(10)
        for i, stage in enumerate(swin.stages):
            out[f'layers.{i}.blocks.1.attn_mask'] = torch.zeros(
                4, window**2, window**2)
    return out


def save_official(path, swin, **kwargs):
    torch.save({'model': mmseg_to_official(swin, **kwargs)}, str(path))
    return str(path)


def tokens(batch=2, length=6):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, 32, (batch, length), generator=g)
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[0, 4:] = 0
    ids[0, 4:] = 0
    return ids, mask


def image(batch=2, size=64):
    return torch.randn(batch, 3, size, size,
                       generator=torch.Generator().manual_seed(2))


def messages(records, level):
    return [r.getMessage() for r in records if r.levelno == level]


# -------------------------------------------------------- stage loop


def test_no_fusion_is_bit_identical_to_mmseg_swin():
    ref = random_swin()
    model = build_lang_swin().eval()
    model.load_state_dict(ref.state_dict(), strict=False)
    img = image()
    ids, mask = tokens()
    with torch.no_grad():
        expected = ref(img)
        feats, lang, lang_mask = model(img, ids, mask)
    assert len(feats) == 4
    for i, (got, want) in enumerate(zip(feats, expected)):
        assert got.shape == (2, 16 * 2**i, 16 // 2**i, 16 // 2**i)
        assert torch.equal(got, want), f'stage {i} differs'
    assert lang.shape == (2, 6, HIDDEN)
    assert lang_mask is mask


def test_absolute_positions_at_the_trained_and_at_other_sizes():
    """At the size it was learnt for, the table is added as mmseg's Swin adds it; at other sizes it
    is resized bicubically (mmseg's Swin fails there)."""
    ref = random_swin(use_abs_pos_embed=True, pretrain_img_size=64)
    model = build_lang_swin(use_abs_pos_embed=True, pretrain_img_size=64).eval()
    model.load_state_dict(ref.state_dict(), strict=False)
    assert model.pretrain_img_size_patches == (16, 16)
    ids, mask = tokens()
    with torch.no_grad():
        expected = ref(image())
        feats, _, _ = model(image(), ids, mask)
        for got, want in zip(feats, expected):
            assert torch.equal(got, want)
        # 32 x 48 input: a 8 x 12 patch grid
        table = ref.absolute_pos_embed.reshape(1, 16, 16, -1).permute(0, 3, 1, 2)
        table = F.interpolate(table, size=(8, 12), mode='bicubic', align_corners=False)
        torch.testing.assert_close(model.abs_pos_embed_at((8, 12)),
                                   table.flatten(2).transpose(1, 2))
        img = torch.randn(2, 3, 32, 48, generator=torch.Generator().manual_seed(3))
        feats, _, _ = model(img, ids, mask)
    assert feats[0].shape == (2, 16, 8, 12)
    with pytest.raises(RuntimeError):
        ref(img)


def test_out_norm_false_returns_unnormed_stage_outputs():
    ref = random_swin()
    for i in range(4):
        setattr(ref, f'norm{i}', nn.Identity())
    model = build_lang_swin(out_norm=False).eval()
    model.load_state_dict(random_swin().state_dict(), strict=False)
    img = image()
    with torch.no_grad():
        expected = ref(img)
        feats, _, _ = model(img, *tokens())
    for got, want in zip(feats, expected):
        assert torch.equal(got, want)


def test_fusion_stream_and_output_routing_matches_hooked_swin():
    """x_stream feeds the patch merging, x_out (normed) the outputs."""
    stream = [0.5, -0.25, 0.75, 1.0]
    out = [0.1, 0.2, -0.3, 0.4]
    ref = random_swin()
    for i in range(4):
        if ref.stages[i].downsample is not None:
            ref.stages[i].downsample.register_forward_pre_hook(
                lambda m, args, s=stream[i]: (args[0] + s, ) + args[1:])
        getattr(ref, f'norm{i}').register_forward_pre_hook(
            lambda m, args, s=out[i]: (args[0] + s, ))
    fusions = [
        dict(type='ShiftFusion', stream_shift=s, out_shift=o)
        for s, o in zip(stream, out)
    ]
    model = build_lang_swin(fusions=fusions).eval()
    model.load_state_dict(ref.state_dict(), strict=False)
    img = image()
    with torch.no_grad():
        expected = ref(img)
        feats, _, _ = model(img, *tokens())
    for i, (got, want) in enumerate(zip(feats, expected)):
        assert torch.equal(got, want), f'stage {i} differs'
    # Without the shifts the output must change (the hooks do something).
    with torch.no_grad():
        plain = build_lang_swin().eval()
        plain.load_state_dict(ref.state_dict(), strict=False)
        feats_plain, _, _ = plain(img, *tokens())
    assert not torch.equal(feats_plain[1], feats[1])


def test_fusion_channels_are_filled_in_and_none_skips_a_stage():
    model = build_lang_swin(
        fusions=[dict(type='ShiftFusion'), None,
                 dict(type='ShiftFusion'), None])
    assert [f is None for f in model.fusions] == [False, True, False, True]
    assert model.fusions[0].vis_channels == 16
    assert model.fusions[2].vis_channels == 64
    assert model.fusions[0].lang_channels == HIDDEN
    assert any(k.startswith('fusions.2.') for k in model.state_dict())
    assert not any(k.startswith('fusions.1.') for k in model.state_dict())
    one = build_lang_swin(fusions=dict(type='ShiftFusion'))
    assert [f.vis_channels for f in one.fusions] == [16, 32, 64, 128]


def test_language_stages_interleave_with_fusions():
    model = build_lang_swin(
        text_stages=2,
        lang_stage_positions=[0, 2],
        fusions=dict(type='ShiftFusion', lang_shift=1.0)).eval()
    model.init_weights()
    ids, mask = tokens()
    with torch.no_grad():
        _, lang, _ = model(image(), ids, mask)
    assert EVENTS == [('embed', ), ('lang', 0), ('fusion', 16, (16, 16)),
                      ('fusion', 32, (8, 8)), ('lang', 1),
                      ('fusion', 64, (4, 4)), ('fusion', 128, (2, 2))]
    # The same order, written out by hand.
    enc = model.text_encoder
    with torch.no_grad():
        l0 = enc.forward_stage(0, enc.embed(ids, mask), mask)
        before_fusion2 = enc.forward_stage(1, l0 + 1 + 1, mask)
        expected = before_fusion2 + 1 + 1
    assert torch.equal(model.fusions[0].received_lang, l0)
    assert torch.equal(model.fusions[2].received_lang, before_fusion2)
    assert torch.equal(lang, expected)


def test_default_language_positions():
    assert build_lang_swin(text_stages=1).lang_stage_positions == (0, )
    assert build_lang_swin(text_stages=4).lang_stage_positions == (0, 1, 2, 3)
    model = build_lang_swin(text_stages=4).eval()
    with torch.no_grad():
        model(image(1), *tokens(1))
    assert [e for e in EVENTS if e[0] == 'lang'] == [('lang', k)
                                                     for k in range(4)]


@pytest.mark.parametrize(
    'kwargs, match',
    [(dict(text_stages=2), 'set lang_stage_positions'),
     (dict(text_stages=2, lang_stage_positions=[0]), 'one entry per'),
     (dict(text_stages=2, lang_stage_positions=[2, 1]), 'must be sorted'),
     (dict(text_stages=2, lang_stage_positions=[0, 4]), r'in \[0, 4\)'),
     (dict(fusions=[None, None]), 'fusions has 2 entries'),
     (dict(fusions=[dict(type='ShiftFusion', vis_channels=99), None, None,
                    None]), 'fusions\\[0\\] sets vis_channels=99'),
     (dict(fusions=['ShiftFusion', None, None, None]), 'fusions\\[0\\]'),
     (dict(init_cfg=dict(type='Kaiming')), 'init_cfg must be')])
def test_bad_arguments(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        build_lang_swin(**kwargs)


def test_bad_token_shapes():
    model = build_lang_swin().eval()
    ids, mask = tokens(batch=3)
    with pytest.raises(ValueError, match='3 token sequences'):
        model(image(2), ids, mask)
    with pytest.raises(ValueError, match='must both be'):
        model(image(2), ids[:2], mask[:2, :4])


def test_gradients_reach_every_part():
    model = build_lang_swin(
        fusions=dict(type='ShiftFusion', lang_shift=0.5)).train()
    model.init_weights()
    feats, lang, _ = model(image(), *tokens())
    (sum(f.square().mean() for f in feats) + lang.square().mean()).backward()
    assert model.patch_embed.projection.weight.grad.abs().sum() > 0
    assert model.fusions[0].scale.grad.abs().sum() > 0
    assert model.text_encoder.embedding.weight.grad.abs().sum() > 0


# ------------------------------------------------------------ init


def test_default_init_leaves_text_encoder_to_itself():
    model = build_lang_swin(fusions=dict(type='ShiftFusion'))
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(3.0)
    model.init_weights()
    assert torch.equal(model.norm0.weight, torch.ones(16))
    assert torch.equal(model.stages[0].blocks[0].norm1.bias, torch.zeros(16))
    qkv = model.stages[1].blocks[0].attn.w_msa.qkv
    assert torch.equal(qkv.bias, torch.zeros_like(qkv.bias))
    assert 0.01 < qkv.weight.std() < 0.03
    table = model.stages[3].blocks[0].attn.w_msa.relative_position_bias_table
    assert 0.01 < table.std() < 0.03
    assert model.text_encoder.init_calls == 1
    assert torch.all(model.text_encoder.embedding.weight == 0.25)
    assert all(f.init_calls == 1 for f in model.fusions)


def test_official_checkpoint_loads_bit_exact(tmp_path, log_records):
    src = random_swin(seed=3)
    path = save_official(tmp_path / 'swin_official.pth', src)
    model = build_lang_swin(
        fusions=dict(type='ShiftFusion'),
        init_cfg=dict(type='Pretrained', checkpoint=path))
    model.init_weights()
    source = src.state_dict()
    loaded = swin_part(model)
    compared = 0
    for key, value in loaded.items():
        if re.match(r'norm\d+\.', key):
            continue
        assert torch.equal(value, source[key]), key
        compared += 1
    assert compared == len(source) - 8
    # Patch merging went through the channel re-order (not a plain copy).
    red = 'stages.1.downsample.reduction.weight'
    official_red = torch.load(path, weights_only=True)['model'][
        'layers.1.downsample.reduction.weight']
    assert not torch.equal(official_red, source[red])
    # The per-output norms are fresh; the text encoder initialised itself.
    assert torch.equal(model.norm3.weight, model.norm3.weight.new_ones(128))
    assert model.text_encoder.init_calls == 1
    assert torch.all(model.text_encoder.embedding.weight == 0.25)
    assert all(f.init_calls == 1 for f in model.fusions)

    info = '\n'.join(messages(log_records, logging.INFO))
    assert 'official Microsoft names converted' in info
    assert re.search(r'not in .*as expected.*norm0\.weight', info)
    assert 'head.weight' in info and 'norm.weight' in info
    assert messages(log_records, logging.WARNING) == []

    # With the source's output norms copied in, the loaded model computes
    # exactly what the source computes.
    with torch.no_grad():
        for i in range(4):
            getattr(model, f'norm{i}').load_state_dict(
                getattr(src, f'norm{i}').state_dict())
        img = image()
        want = src(img)
        got, _, _ = model.eval()(img, *tokens())
    for i in range(4):
        assert torch.equal(got[i], want[i]), f'stage {i} differs'


def test_patch_merging_reorder_matches_official_merging():
    """convert_official_swin re-orders for nn.Unfold: same outputs."""
    c, hw = 8, (6, 4)
    g = torch.Generator().manual_seed(5)
    official = {
        'layers.0.downsample.norm.weight': torch.randn(4 * c, generator=g),
        'layers.0.downsample.norm.bias': torch.randn(4 * c, generator=g),
        'layers.0.downsample.reduction.weight': torch.randn(
            2 * c, 4 * c, generator=g),
    }
    converted = convert_official_swin(official)
    merging = PatchMerging(c, 2 * c)
    merging.load_state_dict({
        k[len('stages.0.downsample.'):]: v
        for k, v in converted.items()
    })
    x = torch.randn(2, hw[0] * hw[1], c, generator=g)

    xs = x.view(2, *hw, c)
    cat = torch.cat([
        xs[:, 0::2, 0::2], xs[:, 1::2, 0::2], xs[:, 0::2, 1::2],
        xs[:, 1::2, 1::2]
    ], -1).view(2, -1, 4 * c)
    want = F.layer_norm(cat, (4 * c, ),
                        official['layers.0.downsample.norm.weight'],
                        official['layers.0.downsample.norm.bias'])
    want = want @ official['layers.0.downsample.reduction.weight'].t()
    got, out_hw = merging(x, hw)
    assert out_hw == (3, 2)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_name_mapping():
    t = torch.zeros(1)
    converted = convert_official_swin(
        OrderedDict([('patch_embed.proj.weight', t),
                     ('patch_embed.norm.bias', t),
                     ('layers.2.blocks.5.attn.qkv.weight', t),
                     ('layers.2.blocks.5.attn.relative_position_bias_table',
                      t), ('layers.2.blocks.5.mlp.fc1.bias', t),
                     ('layers.2.blocks.5.mlp.fc2.weight', t),
                     ('layers.2.blocks.5.norm2.weight', t),
                     ('layers.0.blocks.1.attn_mask', t),
                     ('head.weight', t), ('norm.weight', t)]))
    assert list(converted) == [
        'patch_embed.projection.weight', 'patch_embed.norm.bias',
        'stages.2.blocks.5.attn.w_msa.qkv.weight',
        'stages.2.blocks.5.attn.w_msa.relative_position_bias_table',
        'stages.2.blocks.5.ffn.layers.0.0.bias',
        'stages.2.blocks.5.ffn.layers.1.weight',
        'stages.2.blocks.5.norm2.weight', 'norm.weight'
    ]


def test_window_size_change_resizes_tables(tmp_path, log_records):
    src = random_swin(seed=4, window_size=7)
    with torch.no_grad():
        for i, stage in enumerate(src.stages):
            for block in stage.blocks:
                table = block.attn.w_msa.relative_position_bias_table
                # head h holds the constant h + 1 ...
                table.copy_(
                    torch.arange(1., table.shape[1] + 1).expand_as(table))
        # ... except head 0 of stage 1, a ramp along dy (rows of 13 x 13).
        ramp = src.stages[1].blocks[0].attn.w_msa.relative_position_bias_table
        ramp[:, 0] = torch.arange(13.).repeat_interleave(13)
    path = save_official(tmp_path / 'swin_w7.pth', src)
    model = build_lang_swin(
        window_size=4, init_cfg=dict(type='Pretrained', checkpoint=path))
    model.init_weights()
    for i, stage in enumerate(model.stages):
        for j, block in enumerate(stage.blocks):
            table = block.attn.w_msa.relative_position_bias_table
            assert table.shape == (49, TINY['num_heads'][i])
            for h in range(table.shape[1]):
                if (i, j, h) == (1, 0, 0):
                    continue
                torch.testing.assert_close(
                    table[:, h], torch.full((49, ), h + 1.))
    ramp = model.stages[1].blocks[0].attn.w_msa.relative_position_bias_table
    grid = ramp[:, 0].view(7, 7)
    # Constant along dx, increasing along dy, within the source range.
    torch.testing.assert_close(grid, grid[:, :1].expand(7, 7))
    assert torch.all(grid[1:, 0] > grid[:-1, 0])
    assert grid.min() >= 0 and grid.max() <= 12
    # Other weights are untouched, and the model runs at its own window.
    assert torch.equal(model.stages[2].blocks[1].ffn.layers[1].weight,
                       src.stages[2].blocks[1].ffn.layers[1].weight)
    with torch.no_grad():
        feats, _, _ = model.eval()(image(1), *tokens(1))
    assert feats[3].shape == (1, 128, 2, 2)
    info = '\n'.join(messages(log_records, logging.INFO))
    assert 'resized relative position bias tables' in info
    assert messages(log_records, logging.WARNING) == []


def test_missing_and_unexpected_keys_are_reported(tmp_path, log_records):
    official = mmseg_to_official(random_swin(seed=6))
    del official['layers.1.blocks.0.mlp.fc1.weight']
    official['extra.weight'] = torch.zeros(3)
    path = str(tmp_path / 'partial.pth')
    torch.save({'model': official}, path)
    model = build_lang_swin(
        fusions=dict(type='ShiftFusion'),
        init_cfg=dict(type='Pretrained', checkpoint=path))
    model.init_weights()
    warnings = messages(log_records, logging.WARNING)
    assert len(warnings) == 2
    missing = next(w for w in warnings if 'missing keys' in w)
    unexpected = next(w for w in warnings if 'unexpected keys' in w)
    assert path in missing
    assert missing.endswith(': stages.1.blocks.0.ffn.layers.0.0.weight')
    assert unexpected.endswith(': extra.weight')
    for w in warnings:
        assert 'text_encoder' not in w and 'fusions' not in w
        assert not re.search(r'norm\d', w)

    report = load_pretrained_swin(
        model, path, exclude_prefixes=('text_encoder.', 'fusions.'))
    assert report.converted
    assert report.missing == ['stages.1.blocks.0.ffn.layers.0.0.weight']
    assert report.unexpected == ['extra.weight']
    assert sorted(report.expected_missing) == sorted(
        [f'norm{i}.{p}' for i in range(4) for p in ('weight', 'bias')] + [
            f'stages.{i}.blocks.{j}.attn.w_msa.relative_position_index'
            for i in range(4) for j in range(2)
        ])
    assert set(report.ignored) >= {
        'head.weight', 'head.bias', 'norm.weight', 'norm.bias'
    }
    assert len(report.loaded) == len(swin_part(model)) - 8 - 8 - 1


def test_checkpoint_of_another_model_raises(tmp_path):
    path = str(tmp_path / 'other.pth')
    torch.save(
        {
            'state_dict': {
                'decode_head.conv_seg.weight': torch.zeros(2, 4, 1, 1),
                'bert.embeddings.word_embeddings.weight': torch.zeros(5, 4)
            }
        }, path)
    model = build_lang_swin(init_cfg=dict(type='Pretrained', checkpoint=path))
    with pytest.raises(RuntimeError) as err:
        model.init_weights()
    assert path in str(err.value)
    assert 'decode_head.conv_seg.weight' in str(err.value)
    assert 'no weight of the Swin backbone' in str(err.value)


def test_shape_mismatch_names_key_and_shapes(tmp_path):
    path = save_official(tmp_path / 'wide.pth', random_swin(embed_dims=32))
    model = build_lang_swin(init_cfg=dict(type='Pretrained', checkpoint=path))
    with pytest.raises(RuntimeError) as err:
        model.init_weights()
    msg = str(err.value)
    assert path in msg
    assert ('patch_embed.projection.weight: checkpoint (32, 3, 4, 4) vs '
            'model (16, 3, 4, 4)') in msg


def test_unreadable_checkpoints(tmp_path):
    missing = str(tmp_path / 'nope.pth')
    model = build_lang_swin(
        init_cfg=dict(type='Pretrained', checkpoint=missing))
    with pytest.raises(FileNotFoundError, match='nope.pth'):
        model.init_weights()
    # LAVT-style files pickle an argparse.Namespace: not weights_only safe.
    unsafe = str(tmp_path / 'unsafe.pth')
    torch.save({
        'model': mmseg_to_official(random_swin()),
        'args': argparse.Namespace(lr=1)
    }, unsafe)
    model = build_lang_swin(
        init_cfg=dict(type='Pretrained', checkpoint=unsafe))
    with pytest.raises(RuntimeError, match='weights_only'):
        model.init_weights()


def test_mmseg_named_segmentor_checkpoint_loads(tmp_path, log_records):
    """mmseg names under ``state_dict`` with ``backbone.`` load unconverted."""
    src = random_swin(seed=7)
    state = {f'module.backbone.{k}': v for k, v in src.state_dict().items()}
    state['decode_head.conv_seg.weight'] = torch.zeros(2, 4, 1, 1)
    path = str(tmp_path / 'segmentor.pth')
    torch.save({'state_dict': state, 'meta': {'epoch': 3}}, path)
    model = build_lang_swin(init_cfg=dict(type='Pretrained', checkpoint=path))
    model.init_weights()
    for key, value in src.state_dict().items():
        if key.endswith('relative_position_index'):
            continue  # derived buffer, recomputed (and equal anyway)
        assert torch.equal(swin_part(model)[key], value), key
    assert 'converted' not in '\n'.join(messages(log_records, logging.INFO))
    warnings = messages(log_records, logging.WARNING)
    assert len(warnings) == 1
    assert warnings[0].endswith(': decode_head.conv_seg.weight')


def test_converter_script_round_trip(tmp_path):
    src = random_swin(seed=8)
    official = save_official(tmp_path / 'official.pth', src)
    dst = str(tmp_path / 'out' / 'mmseg.pth')
    spec = importlib.util.spec_from_file_location('swin2mmseg_ris',
                                                  CONVERTER)
    converter = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(converter)
    converter.main([official, dst])

    converted = torch.load(dst, weights_only=True)
    source = src.state_dict()
    expected_keys = [k for k in source if not re.match(r'norm\d+\.', k)]
    assert sorted(converted) == sorted(expected_keys +
                                       ['norm.weight', 'norm.bias'])
    for key in expected_keys:
        assert torch.equal(converted[key], source[key]), key

    model = build_lang_swin(init_cfg=dict(type='Pretrained', checkpoint=dst))
    model.init_weights()
    for key in expected_keys:
        assert torch.equal(swin_part(model)[key], source[key]), key

    with pytest.raises(ValueError, match='does not use official Swin names'):
        converter.main([dst, str(tmp_path / 'again.pth')])


def swin_parameter_count(c, depths, heads, window, mlp_ratio=4):
    """Parameters of mmseg's Swin (with norm0..3), from the architecture."""
    n = 3 * c * 4 * 4 + c + 2 * c  # patch conv + its LayerNorm
    for i, depth in enumerate(depths):
        ci = c * 2**i
        hidden = mlp_ratio * ci
        block = (2 * ci  # norm1
                 + 3 * ci * ci + 3 * ci  # qkv
                 + ci * ci + ci  # proj
                 + (2 * window - 1)**2 * heads[i]  # relative position table
                 + 2 * ci  # norm2
                 + ci * hidden + hidden + hidden * ci + ci)  # mlp
        n += depth * block
        if i < len(depths) - 1:
            n += 2 * 4 * ci + 4 * ci * 2 * ci  # merging norm + reduction
        n += 2 * ci  # norm{i}
    return n


def test_swin_base_builds_with_expected_size():
    arch = dict(
        embed_dims=128,
        depths=(2, 2, 18, 2),
        num_heads=(4, 8, 16, 32),
        window_size=12,
        drop_path_rate=0.3,
        pretrain_img_size=384)
    model = LangSwinTransformer(
        text_encoder=dict(type='TinyStagedTextEncoder'),
        fusions=[None] * 4,
        **arch)
    n = sum(p.numel() for k, p in model.named_parameters()
            if not k.startswith(('text_encoder.', 'fusions.')))
    assert n == swin_parameter_count(128, (2, 2, 18, 2), (4, 8, 16, 32), 12)
    assert 86e6 < n < 88e6
    assert model.num_features == [128, 256, 512, 1024]
    assert model.stages[3].blocks[1].attn.drop.drop_prob == pytest.approx(0.3)
