"""Tests of ConvPatchEmbed and its use as LangSwinTransformer's stem.

Expectations are derived by hand, not from the module: the receptive field of
two stride-2 3x3 convolutions (token (i, j) sees input rows 4i-3 .. 4i+3),
and the token grid of Swin's own corner-padded patchify.
"""
import pytest
import torch
from mmseg.models.backbones import SwinTransformer
from mmseg.registry import MODELS

import mmseg_ris  # noqa: F401  (registers the modules)
from mmseg_ris.models.utils import ConvPatchEmbed


def test_tokens_and_grid_match_swin_patchify():
    stem = ConvPatchEmbed(out_channels=24).eval()
    swin = SwinTransformer(embed_dims=24, depths=(1, ), num_heads=(1, ), strides=(4, ), out_indices=(0, ))
    for h, w in ((128, 128), (130, 97), (5, 7)):
        x = torch.randn(2, 3, h, w)
        tokens, hw = stem(x)
        _, hw_swin = swin.patch_embed(x)
        assert tuple(hw) == tuple(hw_swin) == (-(-h // 4), -(-w // 4))
        assert tokens.shape == (2, hw[0] * hw[1], 24)
    assert stem.patch_size == 4


def test_token_norm_is_layernorm_over_channels():
    stem = ConvPatchEmbed(out_channels=16).eval()
    tokens, _ = stem(torch.randn(1, 3, 32, 32))
    # unit LayerNorm at init: zero mean and unit variance per token
    assert torch.allclose(tokens.mean(-1), torch.zeros(1, 64), atol=1e-5)
    assert torch.allclose(tokens.var(-1, unbiased=False), torch.ones(1, 64), atol=5e-3)  # eps=1e-5


@pytest.mark.parametrize('pixel', [(0, 0), (13, 6), (31, 31), (16, 17)])
def test_receptive_field_is_the_hand_derived_one(pixel):
    """Token (i, j) depends on input rows 4i-3 .. 4i+3 and columns 4j-3 .. 4j+3, nothing else."""
    torch.manual_seed(0)
    stem = ConvPatchEmbed(out_channels=8).eval()  # eval: BN is a fixed affine map
    x = torch.randn(1, 3, 32, 32)
    y0, (h, w) = stem(x)
    x2 = x.clone()
    x2[0, :, pixel[0], pixel[1]] += 5.0
    y1, _ = stem(x2)
    changed = (y1 - y0).abs().amax(-1).reshape(h, w) > 1e-6
    r, c = pixel
    expect = torch.zeros(h, w, dtype=torch.bool)
    for i in range(h):
        for j in range(w):
            expect[i, j] = 4 * i - 3 <= r <= 4 * i + 3 and 4 * j - 3 <= c <= 4 * j + 3
    assert torch.equal(changed, expect)


def test_strides_give_the_patch_size():
    stem = ConvPatchEmbed(out_channels=8, channels=(8, 8, 8), strides=(2, 1, 2))
    assert stem.patch_size == 4
    _, hw = stem(torch.randn(1, 3, 40, 24))
    assert tuple(hw) == (10, 6)


@pytest.mark.parametrize('kwargs, match', [
    (dict(channels=(8, ), strides=(2, 2)), 'equal length'),
    (dict(channels=(), strides=()), 'non-empty'),
    (dict(channels=(8, ), strides=(4, )), 'strides must be 1 or 2'),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ConvPatchEmbed(out_channels=8, **kwargs)


def _lang_swin(**kwargs):
    cfg = dict(
        type='LangSwinTransformer',
        text_encoder=dict(type='BertLanguageEncoder', config=dict(
            vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
            intermediate_size=32, max_position_embeddings=32), stages=(1, )),
        embed_dims=16, depths=(1, 1), num_heads=(1, 2), window_size=4, strides=(4, 2),
        out_indices=(0, 1), pretrain_img_size=32, init_cfg=None)
    cfg.update(kwargs)
    return MODELS.build(cfg)


def test_lang_swin_uses_the_stem():
    model = _lang_swin(patch_embed=dict(type='ConvPatchEmbed', channels=(8, 16)))
    model.init_weights()
    assert isinstance(model.patch_embed, ConvPatchEmbed)
    assert model.patch_embed.norm.normalized_shape == (16, )  # out_channels filled in from embed_dims
    ids = torch.tensor([[101, 5, 6, 102, 0], [101, 7, 102, 0, 0]]) % 40
    mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 0, 0]])
    feats, _, _ = model(torch.randn(2, 3, 32, 32), ids, mask)
    assert [tuple(f.shape) for f in feats] == [(2, 16, 8, 8), (2, 32, 4, 4)]
    # the stem is trained with the rest
    sum(f.sum() for f in feats).backward()
    assert model.patch_embed.convs[0].weight.grad.abs().sum() > 0


@pytest.mark.parametrize('patch_embed, match', [
    (dict(type='ConvPatchEmbed', out_channels=8), 'out_channels=8 but embed_dims is 16'),
    (dict(type='ConvPatchEmbed', channels=(8, ), strides=(2, )), 'patch size 2; Swin here uses 4'),
])
def test_lang_swin_rejects_a_mismatched_stem(patch_embed, match):
    with pytest.raises(ValueError, match=match):
        _lang_swin(patch_embed=patch_embed)
