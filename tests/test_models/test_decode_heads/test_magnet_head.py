"""Tests of MagNetHead (pixel decoder + one-query masked decoder + losses).

Expected values are computed independently of the head's code paths:

* the decoding loop is compared with mmdet's own ``Mask2FormerHead.forward``
  carrying the same weights (a 3-level encoder, the only setting mmdet's
  head accepts);
* BCE / Dice are recomputed with ``F.binary_cross_entropy_with_logits`` and
  the Dice formula on ``F.interpolate``-d logits; CAL by calling a fresh
  ``CrossModalAlignmentLoss`` on the head's mask features, a hand-built
  masked mean of the language and ``lang_proj``'s weights;
* the CAL target, the attention-mask rule and the parameter count are
  checked against hand-computed values.
"""
import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.config import ConfigDict
from mmengine.registry import DefaultScope
from mmengine.structures import PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

import mmseg_ris  # noqa: F401  (registers the models and losses)
from mmseg_ris.models.decode_heads import MagNetHead, RISBaseDecodeHead
from mmseg_ris.models.losses import CrossModalAlignmentLoss
from tiny_configs import (BERT_HIDDEN, STAGE_CHANNELS, tiny_lavt_model,
                          tiny_text_encoder)

C = 32  # head width
HEADS = 4
WIDTHS = (8, 16, 32, 64)
LANG_C = 24
SIZE = 64  # input size: maps of 16, 8, 4, 2
NUM_TOKENS = 6


@pytest.fixture(scope='module', autouse=True)
def single_thread():
    """One intra-op thread: faster on the shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def pixel_decoder_cfg(num_levels=4, channels=C, heads=HEADS):
    return dict(
        type='mmdet.MSDeformAttnPixelDecoder',
        strides=[4, 8, 16, 32],
        norm_cfg=dict(type='GN', num_groups=8),
        act_cfg=dict(type='ReLU'),
        encoder=dict(
            num_layers=2,
            layer_cfg=dict(
                self_attn_cfg=dict(
                    embed_dims=channels,
                    num_heads=heads,
                    num_levels=num_levels,
                    num_points=4,
                    dropout=0.0,
                    batch_first=True),
                ffn_cfg=dict(
                    embed_dims=channels,
                    feedforward_channels=2 * channels,
                    num_fcs=2,
                    ffn_drop=0.0,
                    act_cfg=dict(type='ReLU', inplace=True)))),
        positional_encoding=dict(num_feats=channels // 2, normalize=True))


def transformer_decoder_cfg(channels=C, heads=HEADS):
    attn = dict(embed_dims=channels, num_heads=heads, attn_drop=0.0,
                proj_drop=0.0, batch_first=True)
    return dict(
        num_layers=2,
        layer_cfg=dict(
            self_attn_cfg=dict(attn),
            cross_attn_cfg=dict(attn),
            ffn_cfg=dict(
                embed_dims=channels,
                feedforward_channels=2 * channels,
                num_fcs=2,
                ffn_drop=0.0,
                act_cfg=dict(type='ReLU', inplace=True))),
        init_cfg=None)


def tiny_cfg(**overrides):
    """Config of a tiny MagNetHead (width 32, 2 + 2 layers, 4 heads)."""
    cfg = dict(
        type='MagNetHead',
        in_channels=WIDTHS,
        channels=C,
        pixel_decoder=pixel_decoder_cfg(),
        transformer_decoder=transformer_decoder_cfg(),
        positional_encoding=dict(num_feats=C // 2, normalize=True),
        lang_channels=LANG_C)
    cfg.update(overrides)
    return cfg


def build(seed=0, **overrides):
    torch.manual_seed(seed)
    head = MODELS.build(tiny_cfg(**overrides))
    head.init_weights()
    return head


def make_inputs(batch=2, seed=0, lengths=(4, NUM_TOKENS), pad_to=NUM_TOKENS):
    """Backbone output: 4 maps (16, 8, 4, 2), language with padding."""
    gen = torch.Generator().manual_seed(seed)
    feats = [
        torch.randn(batch, c, SIZE // s, SIZE // s, generator=gen)
        for c, s in zip(WIDTHS, (4, 8, 16, 32))
    ]
    lang = torch.randn(batch, pad_to, LANG_C, generator=gen)
    mask = torch.zeros(batch, pad_to, dtype=torch.long)
    for i, n in enumerate(lengths[:batch]):
        mask[i, :n] = 1
    return feats, lang, mask


def make_samples(labels):
    samples = []
    for label in labels:
        sample = SegDataSample()
        sample.gt_sem_seg = PixelData(data=label[None].long())
        samples.append(sample)
    return samples


def make_labels(seed=1):
    """Sample 0: random mask with an ignored band; sample 1: all background
    (a sentence with ``exist=False``)."""
    gen = torch.Generator().manual_seed(seed)
    labels = (torch.rand(2, SIZE, SIZE, generator=gen) > 0.6).long()
    labels[0, 56:, :] = 255
    labels[1] = 0
    return labels


# ------------------------------------------------------------------ forward
def test_registry_output_shape_and_layout():
    head = build()
    assert isinstance(head, MagNetHead)
    assert isinstance(head, RISBaseDecodeHead)
    assert head.out_channels == 1 and head.threshold == 0.5
    assert head.align_corners is True
    # All four levels go through the deformable encoder: no FPN level.
    assert len(head.pixel_decoder.input_convs) == 4
    assert len(head.pixel_decoder.lateral_convs) == 0
    assert not hasattr(head, 'conv_seg') and head.dropout is None
    assert head.query_feat.weight.shape == (1, C)

    inputs = make_inputs()
    logits = head(inputs)
    assert logits.shape == (2, 1, SIZE // 4, SIZE // 4)
    out = head.forward_all(inputs)
    torch.testing.assert_close(out['mask_logits'], logits)
    assert len(out['aux_mask_logits']) == 2  # one per decoder layer
    assert all(a.shape == logits.shape for a in out['aux_mask_logits'])
    assert out['mask_features'].shape == (2, C, SIZE // 4, SIZE // 4)
    assert out['mask_features'].dtype == torch.float32


def test_decoding_loop_equals_mmdet_mask2former_head():
    """Same weights, same predictions as mmdet's Mask2FormerHead.forward.

    mmdet's head insists on ``num_levels == num_transformer_feat_level``,
    so the comparison uses a 3-level encoder (+ one FPN level); the loop
    itself does not depend on the encoder's level count.
    """
    from mmdet.models.dense_heads import Mask2FormerHead
    head = build(pixel_decoder=pixel_decoder_cfg(num_levels=3),
                 loss_cal=None).eval()
    assert len(head.pixel_decoder.lateral_convs) == 1
    decoder_cfg = pixel_decoder_cfg(num_levels=3)
    decoder_cfg['type'] = 'MSDeformAttnPixelDecoder'
    with DefaultScope.overwrite_default_scope('mmdet'):
        ref = Mask2FormerHead(
            in_channels=list(WIDTHS),
            feat_channels=C,
            out_channels=C,
            num_things_classes=1,
            num_stuff_classes=0,
            num_queries=1,
            num_transformer_feat_level=3,
            pixel_decoder=ConfigDict(decoder_cfg),
            transformer_decoder=ConfigDict(transformer_decoder_cfg()),
            positional_encoding=dict(num_feats=C // 2, normalize=True),
            loss_cls=ConfigDict(
                type='CrossEntropyLoss', use_sigmoid=False,
                class_weight=[1.0, 0.1])).eval()
    result = ref.load_state_dict(head.state_dict(), strict=False)
    assert result.missing_keys == ['cls_embed.weight', 'cls_embed.bias']
    assert result.unexpected_keys == []

    inputs = make_inputs()
    with torch.no_grad():
        _, expected = ref(inputs[0], [])
        out = head.forward_all(inputs)
    got = out['aux_mask_logits'] + [out['mask_logits']]
    assert len(got) == len(expected) == 3
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e)


def test_attention_mask_rule():
    """Keys where sigmoid(logit) < 0.5 are masked; an all-masked row is
    opened entirely."""
    head = build(loss_cal=None)
    head.mask_embed = nn.Identity()
    # LayerNorm (weight 1, bias 0) keeps an alternating +-1 vector.
    query = torch.tensor([1.0, -1.0] * (C // 2)).view(1, 1, C).repeat(2, 1, 1)
    sign = torch.tensor([[1.0, -1.0], [-2.0, 3.0]])
    feats = torch.empty(2, C, 2, 2)
    feats[0] = query[0, 0].view(C, 1, 1) * sign / C  # logits = sign
    feats[1] = -query[0, 0].view(C, 1, 1).expand(C, 2, 2) / C  # -1
    logits, attn = head._predict_mask(query, feats, (2, 2))
    torch.testing.assert_close(logits[0, 0], sign, atol=1e-4, rtol=0)
    assert attn.shape == (2 * HEADS, 1, 4) and not attn.requires_grad
    expected0 = torch.tensor([False, True, True, False])
    for h in range(HEADS):
        assert attn[h, 0].tolist() == expected0.tolist()
        # sample 1 is negative everywhere -> fully masked -> unmasked
        assert attn[HEADS + h, 0].tolist() == [False] * 4


def test_autocast_keeps_pixel_decoder_float32():
    head = build(loss_cal=None)
    with torch.autocast(device_type='cpu', dtype=torch.bfloat16):
        out = head.forward_all(make_inputs())
    assert out['mask_features'].dtype == torch.float32


# ------------------------------------------------------------------ predict
def test_predict_resizes_and_thresholds():
    head = build().eval()
    inputs = make_inputs()
    metas = [dict(img_shape=(SIZE, SIZE), ori_shape=(100, 80))] * 2
    with torch.no_grad():
        logits = head.predict(inputs, metas, test_cfg=None)
        expected = F.interpolate(head(inputs), size=(SIZE, SIZE),
                                 mode='bilinear', align_corners=True)
    assert logits.shape == (2, 1, SIZE, SIZE)
    torch.testing.assert_close(logits, expected)
    mask = head.logits_to_mask(logits)
    assert mask.tolist() == (expected[:, 0].sigmoid() > 0.5).long().tolist()


def tiny_segmentor(seed=0):
    cfg = tiny_lavt_model(text_encoder=tiny_text_encoder(vocab_size=50))
    cfg['decode_head'] = dict(
        type='MagNetHead',
        in_channels=STAGE_CHANNELS,
        channels=C,
        pixel_decoder=pixel_decoder_cfg(),
        transformer_decoder=transformer_decoder_cfg(),
        positional_encoding=dict(num_feats=C // 2, normalize=True),
        lang_channels=BERT_HIDDEN,
        loss_decode=[
            dict(type='CrossEntropyLoss', use_sigmoid=True,
                 avg_non_ignore=True, loss_weight=2.0, loss_name='loss_bce'),
            dict(type='ForegroundDiceLoss', loss_weight=2.0)
        ],
        loss_cal=dict(type='CrossModalAlignmentLoss', loss_weight=0.5))
    torch.manual_seed(seed)
    model = MODELS.build(cfg)
    model.init_weights()
    return model


def segmentor_batch():
    gen = torch.Generator().manual_seed(3)
    inputs = torch.randn(2, 3, SIZE, SIZE, generator=gen)
    samples = []
    for i, (shape, pad) in enumerate([((SIZE, SIZE), [0, 0, 0, 0]),
                                      ((56, 60), [0, 4, 0, 8])]):
        ds = SegDataSample(metainfo=dict(
            img_shape=shape, pad_shape=(SIZE, SIZE), padding_size=pad,
            ori_shape=(40, 50)))
        ids = torch.randint(1, 50, (8, ), generator=gen)
        mask = torch.zeros(8, dtype=torch.long)
        mask[:5 + 3 * i] = 1
        ds.set_data(dict(input_ids=ids * mask, attention_mask=mask))
        ds.gt_sem_seg = PixelData(
            data=(torch.rand(1, SIZE, SIZE, generator=gen) > 0.6).long())
        samples.append(ds)
    return inputs, samples


def test_segmentor_modes_with_magnet_head():
    """Tensor mode gives the stride-4 logits; predict thresholds the
    sigmoid at 0.5 after resizing; loss returns the three terms."""
    model = tiny_segmentor()
    inputs, samples = segmentor_batch()
    losses = model(inputs, samples, mode='loss')
    assert set(losses) == {'decode.loss_bce', 'decode.loss_dice',
                           'decode.loss_cal', 'decode.acc_seg'}
    assert all(torch.isfinite(v) for v in losses.values())

    model.eval()
    with torch.no_grad():
        logits = model(inputs, samples, mode='tensor')
        results = model(inputs, samples, mode='predict')
    assert logits.shape == (2, 1, SIZE // 4, SIZE // 4)
    up = F.interpolate(logits, size=(SIZE, SIZE), mode='bilinear',
                       align_corners=True)
    for i, ds in enumerate(results):
        h, w = ds.metainfo['img_shape']
        crop = up[i:i + 1, :, :h, :w]  # padding is right / bottom
        if (h, w) != (SIZE, SIZE):
            crop = F.interpolate(crop, size=(h, w), mode='bilinear',
                                 align_corners=True)
        prob = crop[0].sigmoid()
        torch.testing.assert_close(ds.seg_logits.data, prob)
        assert ds.pred_sem_seg.data.shape == (1, h, w)
        assert torch.equal(ds.pred_sem_seg.data, (prob > 0.5).long())


# -------------------------------------------------------------------- losses
def test_loss_values_equal_independent_recomputation():
    head = build(loss_decode=[
        dict(type='CrossEntropyLoss', use_sigmoid=True, avg_non_ignore=True,
             loss_weight=2.0, loss_name='loss_bce'),
        dict(type='ForegroundDiceLoss', loss_weight=2.0)
    ])
    inputs = make_inputs()
    labels = make_labels()
    losses = head.loss(inputs, make_samples(labels), train_cfg=None)
    assert set(losses) == {'loss_bce', 'loss_dice', 'loss_cal', 'acc_seg'}
    assert all(torch.isfinite(v) and v.dim() == 0 for v in losses.values())

    # No dropout and GroupNorm only: a second pass is identical.
    out = head.forward_all(inputs)
    up = F.interpolate(out['mask_logits'], size=(SIZE, SIZE),
                       mode='bilinear', align_corners=True)[:, 0]
    valid = labels != 255
    bce = F.binary_cross_entropy_with_logits(up[valid],
                                             labels[valid].float())
    torch.testing.assert_close(losses['loss_bce'], 2.0 * bce)

    prob = up.sigmoid() * valid
    target = (labels == 1).float()
    dice = 1 - (2 * (prob * target).flatten(1).sum(1) + 1) / (
        prob.flatten(1).sum(1) + target.flatten(1).sum(1) + 1)
    torch.testing.assert_close(losses['loss_dice'], 2.0 * dice.mean())

    feats, lang, lang_mask = inputs
    mean = (lang * lang_mask[..., None]).sum(1) / lang_mask.sum(1,
                                                                keepdim=True)
    text = mean @ head.lang_proj.weight.T + head.lang_proj.bias
    # align_corners: feature pixel i lies on label pixel i * 63 / 15.
    idx = torch.tensor([int(i * 63 / 15 + 0.5) for i in range(16)])
    small = labels[:, idx][:, :, idx]
    cal = CrossModalAlignmentLoss()(out['mask_features'], small, text)
    torch.testing.assert_close(losses['loss_cal'], 0.5 * cal)

    correct = ((up > 0).long() == labels)[valid].float().mean() * 100
    torch.testing.assert_close(losses['acc_seg'], correct)


@pytest.mark.parametrize('align_corners, size, rows', [
    # align_corners: feature i lies on label pixel i * 7 / (h - 1)
    (True, 2, [0, 7]),
    (True, 3, [0, 4, 7]),  # 0, 3.5 (tie: up), 7
    # pixel centres: (i + 0.5) * 8 / h - 0.5
    (False, 2, [2, 6]),  # 1.5, 5.5 (ties: up)
    (False, 3, [1, 4, 6]),  # 0.83, 3.5, 6.17
])
def test_cal_target_pairs_feature_and_label_pixels(align_corners, size,
                                                   rows):
    head = build(loss_cal=None, align_corners=align_corners)
    # Every label pixel holds its own index, so the target shows which
    # pixel was read.
    label = torch.arange(64).view(1, 8, 8)
    target = head.cal_target(label, (size, size))
    assert target.dtype == label.dtype
    assert target.tolist() == [[[r * 8 + c for c in rows] for r in rows]]
    # Values are copied, never blended: ignored pixels stay ignored.
    binary = torch.full((1, 8, 8), 255)
    binary[0, rows[0], rows[0]] = 1
    assert set(head.cal_target(binary, (size, size)).unique().tolist()) == {
        1, 255}


def test_deep_supervision_losses():
    head = build(deep_supervision=True, loss_cal=None,
                 loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=True,
                                  avg_non_ignore=True, loss_weight=2.0,
                                  loss_name='loss_bce'))
    inputs = make_inputs()
    labels = make_labels()
    losses = head.loss(inputs, make_samples(labels), train_cfg=None)
    assert set(losses) == {'loss_bce', 'd0.loss_bce', 'd1.loss_bce',
                           'acc_seg'}
    out = head.forward_all(inputs)
    valid = labels != 255
    for key, logits in [('d0.loss_bce', out['aux_mask_logits'][0]),
                        ('d1.loss_bce', out['aux_mask_logits'][1]),
                        ('loss_bce', out['mask_logits'])]:
        up = F.interpolate(logits, size=(SIZE, SIZE), mode='bilinear',
                           align_corners=True)[:, 0]
        expected = 2.0 * F.binary_cross_entropy_with_logits(
            up[valid], labels[valid].float())
        torch.testing.assert_close(losses[key], expected)
    # d0 is the learned query alone: it does not depend on the image
    # through any decoder layer, only through the mask features.
    assert not torch.allclose(losses['d0.loss_bce'], losses['loss_bce'])


def test_gradients_reach_pixel_decoder_query_and_language():
    head = build()
    feats, lang, lang_mask = make_inputs()
    lang.requires_grad_(True)
    losses = head.loss((feats, lang, lang_mask),
                       make_samples(make_labels()), train_cfg=None)
    total = sum(v for k, v in losses.items() if k.startswith('loss'))
    total.backward()
    for name in ['pixel_decoder.input_convs.0.conv.weight',
                 'pixel_decoder.input_convs.3.conv.weight',
                 'pixel_decoder.encoder.layers.0.self_attn.value_proj.weight',
                 'pixel_decoder.mask_feature.weight',
                 'transformer_decoder.layers.1.cross_attn.attn.in_proj_weight',
                 'query_feat.weight', 'query_embed.weight',
                 'level_embed.weight', 'mask_embed.4.weight',
                 'lang_proj.weight']:
        grad = dict(head.named_parameters())[name].grad
        assert grad is not None and torch.isfinite(grad).all(), name
        assert grad.abs().sum() > 0, name
    # Every parameter is used (DDP without find_unused_parameters).
    assert all(p.grad is not None for p in head.parameters())
    # The language gets gradient through CAL's projection, real tokens only.
    assert lang.grad[0, :4].abs().sum() > 0
    assert lang.grad[0, 4:].abs().sum() == 0

    # Without CAL the language plays no part and no lang_proj exists.
    plain = build(loss_cal=None)
    assert plain.lang_proj is None
    lang2 = lang.detach().clone().requires_grad_(True)
    losses = plain.loss((feats, lang2, lang_mask),
                        make_samples(make_labels()), train_cfg=None)
    assert set(losses) == {'loss_bce', 'loss_dice', 'acc_seg'}
    (losses['loss_bce'] + losses['loss_dice']).backward()
    assert lang2.grad is None


def test_padding_invariance():
    """Extra padded tokens (any values) change neither the logits nor
    T_avg nor the CAL term."""
    head = build().eval()
    feats, lang, mask = make_inputs()
    gen = torch.Generator().manual_seed(9)
    lang_long = torch.cat([lang, 50 * torch.randn(2, 4, LANG_C,
                                                  generator=gen)], dim=1)
    mask_long = torch.cat([mask, torch.zeros(2, 4, dtype=torch.long)], dim=1)
    # Also scramble the padding already present in sample 0.
    lang_long[0, 4:NUM_TOKENS] = 7.0
    samples = make_samples(make_labels())
    with torch.no_grad():
        torch.testing.assert_close(
            head(((feats, lang_long, mask_long))), head((feats, lang, mask)))
        torch.testing.assert_close(
            head.text_embedding(lang_long, mask_long),
            head.text_embedding(lang, mask))
        short = head.loss((feats, lang, mask), samples, None)
        long = head.loss((feats, lang_long, mask_long), samples, None)
    for key in short:
        torch.testing.assert_close(short[key], long[key])


# ---------------------------------------------------------------- full size
def test_full_size_head_builds_runs_and_counts_parameters():
    torch.manual_seed(0)
    head = MagNetHead()  # MagNet's defaults, losses included
    head.init_weights()
    head.eval()
    assert head.transformer_decoder.num_layers == 9
    assert len(head.pixel_decoder.encoder.layers) == 4
    assert head.pixel_decoder.encoder.layers[0].ffn.feedforward_channels == \
        1024
    assert head.transformer_decoder.layers[0].ffn.feedforward_channels == \
        2048
    assert [type(m).__name__ for m in head.loss_decode] == [
        'CrossEntropyLoss', 'ForegroundDiceLoss']
    assert [m.loss_weight for m in head.loss_decode] == [2.0, 2.0]
    assert head.loss_cal.loss_weight == 0.5

    # Hand count. Pixel decoder: input projections (conv + GN) of the four
    # levels, 4 encoder layers (deformable attention: offsets 256 -> 8*4*4*2,
    # weights 256 -> 8*4*4, value and output 256 -> 256; FFN 1024; 2 LN),
    # level embedding, mask_feature conv.
    d = 256
    lin = lambda i, o: i * o + o  # noqa: E731
    input_proj = sum(c * d + d + 2 * d for c in (128, 256, 512, 1024))
    msda = lin(d, 256) + lin(d, 128) + 2 * lin(d, d)
    enc_layer = msda + lin(d, 1024) + lin(1024, d) + 2 * 2 * d
    pixel = input_proj + 4 * enc_layer + 4 * d + lin(d, d)
    # Decoder: 9 x (2 MHA + FFN 2048 + 3 LN) + post-norm.
    mha = 4 * d * d + 4 * d
    dec = 9 * (2 * mha + lin(d, 2048) + lin(2048, d) + 3 * 2 * d) + 2 * d
    rest = 2 * d + 3 * d + 3 * lin(d, d) + lin(768, d)  # queries, levels,
    # mask_embed, lang_proj
    count = sum(p.numel() for p in head.parameters())
    assert sum(p.numel() for p in head.pixel_decoder.parameters()) == pixel
    assert sum(p.numel()
               for p in head.transformer_decoder.parameters()) == dec
    assert count == pixel + dec + rest == 18_193_664

    gen = torch.Generator().manual_seed(0)
    feats = [
        torch.randn(1, c, s, s, generator=gen)
        for c, s in zip((128, 256, 512, 1024), (24, 12, 6, 3))
    ]
    lang = torch.randn(1, 20, 768, generator=gen)
    with torch.no_grad():
        logits = head((feats, lang, torch.ones(1, 20)))
    assert logits.shape == (1, 1, 24, 24)
    assert torch.isfinite(logits).all()


# --------------------------------------------------------------- bad input
@pytest.mark.parametrize('overrides, match', [
    (dict(num_queries=2), 'num_queries must be 1'),
    (dict(out_channels=2), 'out_channels must be 1'),
    (dict(num_classes=3), 'num_classes must be 2'),
    (dict(in_index=(0, 1, 2)), 'differ in length'),
    (dict(num_transformer_feat_level=5), 'num_transformer_feat_level'),
    (dict(pixel_decoder=dict(pixel_decoder_cfg(), feat_channels=64)),
     r'pixel_decoder.feat_channels=64 disagrees'),
    (dict(pixel_decoder=pixel_decoder_cfg(channels=64)),
     'encoder embed_dims'),
    (dict(pixel_decoder=pixel_decoder_cfg(num_levels=2)),
     'encoder num_levels must be in'),
    (dict(pixel_decoder=dict(pixel_decoder_cfg(), strides=[8, 16, 32])),
     'one stride per input map'),
    (dict(transformer_decoder=transformer_decoder_cfg(channels=64)),
     'transformer_decoder embed_dims'),
    (dict(positional_encoding=dict(num_feats=C, normalize=True)),
     'num_feats'),
])
def test_bad_arguments(overrides, match):
    with pytest.raises(ValueError, match=match):
        MODELS.build(tiny_cfg(**overrides))


def test_bad_inputs():
    head = build()
    feats, lang, mask = make_inputs()
    with pytest.raises(TypeError, match='expects the backbone output'):
        head(feats)
    bad = list(feats)
    bad[1] = bad[1][:, :3]
    with pytest.raises(ValueError, match=r'feature 1 \(in_index 1\)'):
        head((bad, lang, mask))
    with pytest.raises(ValueError, match=r'lang should be \(B, L, 24\)'):
        head.text_embedding(lang[..., :5], mask)
    empty = mask.clone()
    empty[1] = 0
    with pytest.raises(ValueError, match=r'samples \[1\] have no real'):
        head.text_embedding(lang, empty)
    with pytest.raises(TypeError, match='takes the dict of forward_all'):
        head.loss_by_feat(head((feats, lang, mask)),
                          make_samples(make_labels()))
    labels = make_labels()
    labels[0, 0, 0] = 2
    with pytest.raises(ValueError, match=r'labels must be 0, 1 or'):
        head.loss((feats, lang, mask), make_samples(labels), None)
    with pytest.raises(RuntimeError, match='no lang_proj'):
        build(loss_cal=None).text_embedding(lang, mask)


def test_config_is_not_mutated():
    cfg = tiny_cfg()
    before = copy.deepcopy(cfg)
    MODELS.build(cfg)
    assert cfg == before
