"""Tests of CategoryAuxHead, the training-only category segmentation head."""
import pytest
import torch
import torch.nn.functional as F
from mmengine.structures import PixelData

from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from mmseg_ris.models.decode_heads import CategoryAuxHead

CFG = dict(type='CategoryAuxHead', in_channels=8, in_index=1, channels=4, num_convs=1,
           concat_input=False, num_classes=4, align_corners=False, dropout_ratio=0.0,
           loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, avg_non_ignore=True,
                            loss_weight=1.0))


def make_inputs(batch=2, size=32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    feats = [torch.randn(batch, c, size // s, size // s, generator=gen)
             for c, s in zip((4, 8, 16, 32), (4, 8, 16, 32))]
    return feats, torch.randn(batch, 5, 6, generator=gen), torch.ones(batch, 5)


def make_samples(maps):
    samples = []
    for category_map in maps:
        sample = SegDataSample()
        sample.gt_category_map = PixelData(data=category_map[None].long())
        samples.append(sample)
    return samples


def test_registry_and_output_at_the_chosen_level():
    head = MODELS.build(CFG)
    assert isinstance(head, CategoryAuxHead)
    assert head(make_inputs()).shape == (2, 4, 4, 4)  # level 1 of a 32x32 input: stride 8


def test_loss_is_cross_entropy_of_upsampled_logits():
    torch.manual_seed(0)
    head = MODELS.build(CFG)
    inputs = make_inputs()
    maps = torch.randint(0, 4, (2, 32, 32))
    maps[1, :3] = 255  # ignored
    losses = head.loss(inputs, make_samples(maps), train_cfg={})
    logits = F.interpolate(head(inputs), size=(32, 32), mode='bilinear', align_corners=False)
    expected = F.cross_entropy(logits, maps, ignore_index=255)
    assert torch.allclose(losses['loss_ce'], expected, atol=1e-6)
    losses['loss_ce'].backward()
    assert head.conv_seg.weight.grad.abs().sum() > 0


def test_maps_of_different_sizes_are_padded_with_ignore_index():
    head = MODELS.build(CFG)
    small, large = torch.ones(20, 24, dtype=torch.long), torch.full((32, 28), 2, dtype=torch.long)
    labels = head._stack_batch_gt(make_samples([small, large]))
    assert labels.shape == (2, 1, 32, 28)
    assert (labels[0, 0, :20, :24] == 1).all()
    assert (labels[0, 0, 20:] == 255).all() and (labels[0, 0, :, 24:] == 255).all()
    assert torch.equal(labels[1, 0], large)


def test_missing_map_and_out_of_range_ids_are_errors():
    head = MODELS.build(CFG)
    with pytest.raises(KeyError, match='LoadCategoryMap'):
        head.loss(make_inputs(), [SegDataSample(), SegDataSample()], train_cfg={})
    maps = torch.zeros(2, 32, 32, dtype=torch.long)
    maps[0, 0, 0] = 4
    with pytest.raises(ValueError, match='category id 4.*num_classes=4'):
        head.loss(make_inputs(), make_samples(maps), train_cfg={})


def test_rejects_a_bare_feature_list():
    head = MODELS.build(CFG)
    with pytest.raises(TypeError, match='CategoryAuxHead.forward expects the backbone output'):
        head(make_inputs()[0])


def test_segmentor_adds_the_category_loss():
    """As a RISEncoderDecoder auxiliary head: ``aux.loss_ce`` on the backbone's output."""
    from tiny_configs import STAGE_CHANNELS, tiny_lavt_model, tiny_text_encoder
    torch.manual_seed(0)
    model = MODELS.build(tiny_lavt_model(
        text_encoder=tiny_text_encoder(vocab_size=50),
        auxiliary_head=dict(CFG, in_channels=STAGE_CHANNELS[2], in_index=2))).train()
    inputs = torch.randn(2, 3, 64, 64)
    maps = torch.randint(0, 4, (2, 64, 64))
    samples = make_samples(maps)
    for sample in samples:
        sample.gt_sem_seg = PixelData(data=(torch.rand(1, 64, 64) > 0.5).long())
        sample.set_data(dict(input_ids=torch.tensor([1, 7, 9, 2, 0]),
                             attention_mask=torch.tensor([1, 1, 1, 1, 0])))
    losses = model.loss(inputs, samples)
    assert {'aux.loss_ce', 'aux.acc_seg', 'decode.loss_ce'} <= set(losses)
    # Independent value, still in training mode (BN on batch statistics, no dropout).
    with torch.no_grad():
        feats = model.backbone(inputs, torch.stack([s.input_ids for s in samples]),
                               torch.stack([s.attention_mask for s in samples]))
        logits = F.interpolate(model.auxiliary_head(feats), size=(64, 64), mode='bilinear',
                               align_corners=False)
    torch.testing.assert_close(losses['aux.loss_ce'].detach(), F.cross_entropy(logits, maps))
    losses['aux.loss_ce'].backward()
    assert model.backbone.stages[0].blocks[0].attn.w_msa.qkv.weight.grad.abs().sum() > 0
