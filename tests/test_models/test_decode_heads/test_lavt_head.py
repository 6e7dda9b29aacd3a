"""Tests of LAVTHead and the RISBaseDecodeHead rules it inherits."""
import math

import pytest
import torch
import torch.nn.functional as F
from mmengine.structures import PixelData

from mmseg.models.losses import CrossEntropyLoss
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from mmseg_ris.models.decode_heads import LAVTHead, RISBaseDecodeHead

SMALL = dict(in_channels=[4, 8, 16, 32], channels=8)
WEIGHT = torch.tensor([0.9, 1.1])


def make_inputs(batch=2, size=64, widths=(4, 8, 16, 32), seed=0):
    """Backbone output with maps at strides 4, 8, 16 and 32."""
    gen = torch.Generator().manual_seed(seed)
    feats = [
        torch.randn(batch, c, size // s, size // s, generator=gen)
        for c, s in zip(widths, (4, 8, 16, 32))
    ]
    lang = torch.randn(batch, 5, 6, generator=gen)
    return feats, lang, torch.ones(batch, 5)


def make_samples(labels):
    """SegDataSamples carrying ``labels`` (N, H, W) as gt_sem_seg."""
    samples = []
    for label in labels:
        sample = SegDataSample()
        sample.gt_sem_seg = PixelData(data=label[None].long())
        samples.append(sample)
    return samples


def test_output_stride_4_and_registry():
    head = MODELS.build(dict(type='LAVTHead', **SMALL))
    assert isinstance(head, LAVTHead)
    logits = head(make_inputs())
    assert logits.shape == (2, 2, 16, 16)  # 64 / 4


def test_default_widths_are_lavt():
    head = LAVTHead()
    first_convs = [m[0].conv for m in head.merges]
    assert [c.in_channels for c in first_convs] == [1536, 768, 640]
    assert all(m[1].conv.in_channels == 512 for m in head.merges)
    assert all(c.out_channels == 512 for c in first_convs)
    assert all(isinstance(m[0].bn, torch.nn.BatchNorm2d) for m in head.merges)
    assert head.conv_seg.in_channels == 512
    assert head.conv_seg.out_channels == 2
    assert head.align_corners is True
    assert head.dropout is None
    assert head.loss_decode.class_weight == [0.9, 1.1]


def test_loss_hand_computed():
    """Two pixels; logits already at label size, so no resizing."""
    head = LAVTHead(**SMALL)
    # pixel 0: logits (0, ln 3) -> p(1) = 3/4, label 1: nll = ln(4/3)
    # pixel 1: logits (0, 0)    -> p(0) = 1/2, label 0: nll = ln 2
    logits = torch.tensor([[[[0.0, 0.0]], [[math.log(3.0), 0.0]]]])
    labels = torch.tensor([[[1, 0]]])
    losses = head.loss_by_feat(logits, make_samples(labels))
    expected = (1.1 * math.log(4 / 3) + 0.9 * math.log(2)) / (1.1 + 0.9)
    assert losses['loss_ce'].item() == pytest.approx(expected, rel=1e-6)
    assert losses['acc_seg'].item() == pytest.approx(100.0)


@pytest.mark.parametrize('align_corners', [True, False])
def test_loss_equals_lavt_weighted_cross_entropy(align_corners):
    torch.manual_seed(0)
    head = LAVTHead(**SMALL, align_corners=align_corners)
    inputs = make_inputs()
    gen = torch.Generator().manual_seed(1)
    labels = (torch.rand(2, 64, 64, generator=gen) > 0.7).long()
    losses = head.loss(inputs, make_samples(labels), train_cfg=None)
    logits = head(inputs)  # BN in train mode: same batch, same statistics
    logits_up = F.interpolate(
        logits, size=(64, 64), mode='bilinear', align_corners=align_corners)
    expected = F.cross_entropy(logits_up, labels, weight=WEIGHT)
    torch.testing.assert_close(losses['loss_ce'], expected)
    other = F.interpolate(
        logits, size=(64, 64), mode='bilinear',
        align_corners=not align_corners)
    assert not torch.allclose(
        F.cross_entropy(other, labels, weight=WEIGHT), expected)
    correct = (logits_up.argmax(1) == labels).float().mean() * 100
    assert losses['acc_seg'].item() == pytest.approx(correct.item(), abs=1e-3)
    losses['loss_ce'].backward()
    assert head.merges[0][0].conv.weight.grad.abs().sum() > 0


def test_loss_with_ignored_pixels():
    """Ignored pixels (e.g. batch padding) count neither loss nor weight."""
    head = LAVTHead(**SMALL)
    gen = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 2, 8, 8, generator=gen)
    labels = (torch.rand(2, 8, 8, generator=gen) > 0.5).long()
    labels[:, 6:, :] = 255
    losses = head.loss_by_feat(logits, make_samples(labels))
    expected = F.cross_entropy(logits, labels, weight=WEIGHT,
                               ignore_index=255)
    torch.testing.assert_close(losses['loss_ce'], expected)
    # Why the head passes its own avg_factor: mmseg 1.2.2's class-weighted
    # CrossEntropyLoss indexes class_weight with the 255 labels.
    plain = CrossEntropyLoss(class_weight=[0.9, 1.1], avg_non_ignore=True)
    with pytest.raises(IndexError):
        plain(logits, labels, ignore_index=255)
    # Without ignored pixels mmseg's own normaliser is the same weighted mean.
    clean = labels.clamp(max=1)
    torch.testing.assert_close(
        plain(logits, clean, ignore_index=255),
        F.cross_entropy(logits, clean, weight=WEIGHT))


def test_loss_labels_out_of_range():
    head = LAVTHead(**SMALL)
    labels = torch.tensor([[[0, 2]]])
    with pytest.raises(ValueError, match=r'labels must be in \[0, 1\]'):
        head.loss_by_feat(torch.zeros(1, 2, 1, 2), make_samples(labels))


def test_predict_resizes_with_align_corners():
    torch.manual_seed(0)
    head = LAVTHead(**SMALL).eval()
    inputs = make_inputs()
    metas = [dict(img_shape=(64, 64), ori_shape=(100, 80))] * 2
    logits = head.predict(inputs, metas, test_cfg=None)
    expected = F.interpolate(
        head(inputs), size=(64, 64), mode='bilinear', align_corners=True)
    assert logits.shape == (2, 2, 64, 64)
    torch.testing.assert_close(logits, expected)
    torch.testing.assert_close(head.logits_to_mask(logits),
                               expected.argmax(dim=1))


def test_decision_rules():
    two = LAVTHead(**SMALL)
    assert two.out_channels == 2 and two.threshold is None
    logits = torch.tensor([[[[0.2, -1.0]], [[0.1, 3.0]]]])
    assert two.logits_to_mask(logits).tolist() == [[[0, 1]]]
    one = LAVTHead(
        **SMALL,
        out_channels=1,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=True))
    assert one.threshold == 0.5  # not mmseg's 0.3
    # sigmoid(0.1) = 0.525 > 0.5, sigmoid(-0.1) = 0.475
    assert one.logits_to_mask(torch.tensor([[[[0.1, -0.1]]]])).tolist() == [
        [[1, 0]]
    ]
    strict = LAVTHead(
        **SMALL,
        out_channels=1,
        threshold=0.6,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=True))
    assert strict.logits_to_mask(torch.tensor([[[[0.1]]]])).tolist() == [[[0]]]
    with pytest.raises(ValueError, match='expected 1 channels'):
        strict.logits_to_mask(logits)


def test_base_is_abstract_subclass_of_mmseg():
    from mmseg.models.decode_heads.decode_head import BaseDecodeHead
    assert issubclass(LAVTHead, RISBaseDecodeHead)
    assert issubclass(RISBaseDecodeHead, BaseDecodeHead)
    with pytest.raises(TypeError):
        RISBaseDecodeHead(4, 4)  # forward is abstract


@pytest.mark.parametrize('kwargs, match', [
    (dict(num_classes=3), 'num_classes must be 2'),
    (dict(in_channels=[4], in_index=[0]), 'at least two input maps'),
    (dict(in_index=[0, 1, 2]), 'at least two input maps'),
    (dict(input_transform='resize_concat'), 'input_transform is fixed'),
    (dict(out_channels=1, threshold=1.5,
          loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=True)),
     'threshold'),
    (dict(loss_decode=dict(type='CrossEntropyLoss',
                           class_weight=[1.0, 1.0, 1.0])), 'class_weight'),
])
def test_bad_arguments(kwargs, match):
    cfg = dict(SMALL, **kwargs)
    with pytest.raises(ValueError, match=match):
        LAVTHead(**cfg)


def test_bad_inputs():
    head = LAVTHead(**SMALL)
    feats, lang, mask = make_inputs()
    with pytest.raises(TypeError, match='expects the backbone output'):
        head(feats)
    with pytest.raises(TypeError, match='feats must be a list'):
        head((feats[0], lang, mask))
    feats[2] = feats[2][:, :3]
    with pytest.raises(ValueError, match=r'feature 2 \(in_index 2\)'):
        head((feats, lang, mask))


FUSION = dict(type='PWAM', lang_channels=6, num_heads=2)


def _decode_by_hand(head, feats, lang, mask, fused_merges=(0, 1, 2)):
    """LAVTHead.forward written out: merge, then (after ``fused_merges``) a PWAM on its tokens."""
    x = feats[-1]
    for i, (merge, skip) in enumerate(zip(head.merges, reversed(feats[:-1]))):
        x = F.interpolate(x, size=skip.shape[2:], mode='bilinear', align_corners=True)
        x = merge(torch.cat([x, skip], dim=1))
        if i not in fused_merges:
            continue
        fusion = head.fusions[str(i)]
        b, c, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2)
        r = fusion.multimodal_features(tokens, lang, mask)
        tokens = tokens + fusion.gate(r) * r
        x = tokens.transpose(1, 2).reshape(b, c, h, w)
    return head.conv_seg(x)


def test_decoder_fusion_starts_as_lavt_and_uses_the_words():
    torch.manual_seed(0)
    plain = LAVTHead(**SMALL).eval()
    fused = LAVTHead(**SMALL, fusion=FUSION).eval()
    assert len(fused.fusions) == 3
    assert all(f.vis_channels == 8 and f.lang_channels == 6 for f in fused.fusions.values())
    fused.load_state_dict(plain.state_dict(), strict=False)
    feats, lang, mask = make_inputs()
    # zero-initialised gates: at the first step the decoder is LAVT's
    torch.testing.assert_close(fused((feats, lang, mask)), plain((feats, lang, mask)))

    for fusion in fused.fusions.values():  # open the gates
        torch.nn.init.normal_(fusion.gate.fc2.weight)
    out = fused((feats, lang, mask))
    torch.testing.assert_close(out, _decode_by_hand(fused, feats, lang, mask))
    assert not torch.allclose(out, plain((feats, lang, mask)), atol=1e-3)
    other = lang.clone()
    other[:, 1] += 1.0  # another word
    assert not torch.allclose(fused((feats, other, mask)), out, atol=1e-3)
    padded = mask.clone()
    padded[:, 3:] = 0
    changed = lang.clone()
    changed[:, 3:] = torch.randn_like(changed[:, 3:]) * 10  # padding only
    torch.testing.assert_close(fused((feats, changed, padded)), fused((feats, lang, padded)))


def test_decoder_fusion_on_some_merges():
    torch.manual_seed(0)
    head = LAVTHead(**SMALL, fusion=FUSION, fusion_merges=(1, 0)).eval()
    assert list(head.fusions) == ['0', '1']
    names = {k.split('.')[1] for k in head.state_dict() if k.startswith('fusions.')}
    assert names == {'0', '1'}
    for fusion in head.fusions.values():  # open the gates
        torch.nn.init.normal_(fusion.gate.fc2.weight)
    feats, lang, mask = make_inputs()
    out = head((feats, lang, mask))
    torch.testing.assert_close(out, _decode_by_hand(head, feats, lang, mask, fused_merges=(0, 1)))
    # the last merge's output is not fused: its by-hand decode with a fusion there differs
    everywhere = LAVTHead(**SMALL, fusion=FUSION).eval()
    everywhere.load_state_dict(head.state_dict(), strict=False)
    torch.nn.init.normal_(everywhere.fusions['2'].gate.fc2.weight)
    assert not torch.allclose(everywhere((feats, lang, mask)), out, atol=1e-3)


@pytest.mark.parametrize('fusion, merges, match', [
    (dict(type='PWAM'), None, 'lang_channels'),
    (dict(type='PWAM', lang_channels=6, vis_channels=8), None, 'not vis_channels'),
    (None, (0, ), 'needs a fusion'),
    (FUSION, (), 'fusion_merges'),
    (FUSION, (0, 0), 'fusion_merges'),
    (FUSION, (3, ), r'\[0, 3\)'),
    (FUSION, (-1, ), 'fusion_merges'),
])
def test_decoder_fusion_bad_config(fusion, merges, match):
    with pytest.raises(ValueError, match=match):
        LAVTHead(**SMALL, fusion=fusion, fusion_merges=merges)
