"""Tests of ``category_aux``: category segmentation on a RIS decode head's own last features."""
import pytest
import torch
import torch.nn.functional as F
from mmengine.structures import PixelData

from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from mmseg_ris.models.decode_heads import LAVTHead, RISBaseDecodeHead

SMALL = dict(type='LAVTHead', in_channels=[4, 8, 16, 32], channels=8, align_corners=False)
AUX = dict(num_classes=4)


def make_inputs(batch=2, size=64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    feats = [torch.randn(batch, c, size // s, size // s, generator=gen)
             for c, s in zip((4, 8, 16, 32), (4, 8, 16, 32))]
    return feats, torch.randn(batch, 5, 6, generator=gen), torch.ones(batch, 5)


def make_samples(refs, maps):
    samples = []
    for ref, category_map in zip(refs, maps):
        sample = SegDataSample()
        sample.gt_sem_seg = PixelData(data=ref[None].long())
        if category_map is not None:
            sample.gt_category_map = PixelData(data=category_map[None].long())
        samples.append(sample)
    return samples


def test_loss_adds_the_category_terms_computed_by_hand():
    torch.manual_seed(0)
    head = MODELS.build(dict(SMALL, category_aux=AUX)).train()
    inputs = make_inputs()
    refs = (torch.rand(2, 64, 64) > 0.7).long()
    maps = torch.randint(0, 4, (2, 64, 64))
    maps[0, :5] = 255  # ignored pixels
    losses = head.loss(inputs, make_samples(refs, maps), None)
    assert set(losses) == {'loss_ce', 'acc_seg', 'category_loss_ce', 'category_acc'}
    with torch.no_grad():
        feats = head._forward_feature(inputs)
        # the referring part is exactly the head without the option
        plain = head.loss_by_feat(head.cls_seg(feats), make_samples(refs, maps))
        logits = F.interpolate(F.conv2d(feats, head.conv_category.weight, head.conv_category.bias),
                               size=(64, 64), mode='bilinear', align_corners=False)
        valid = maps != 255
        expected = F.cross_entropy(logits, maps, ignore_index=255)
        acc = (logits.argmax(1)[valid] == maps[valid]).float().mean() * 100
    torch.testing.assert_close(losses['loss_ce'], plain['loss_ce'])
    torch.testing.assert_close(losses['category_loss_ce'], expected)
    torch.testing.assert_close(losses['category_acc'].reshape(()), acc)
    # the category loss trains the shared decoder, not only its own 1x1 convolution
    losses['category_loss_ce'].backward()
    assert head.merges[0][0].conv.weight.grad.abs().sum() > 0
    assert head.conv_seg.weight.grad is None


def test_inference_is_unchanged():
    torch.manual_seed(0)
    plain = MODELS.build(SMALL).eval()
    torch.manual_seed(0)
    with_aux = MODELS.build(dict(SMALL, category_aux=AUX)).eval()
    missing, unexpected = with_aux.load_state_dict(plain.state_dict(), strict=False)
    assert missing == ['conv_category.weight', 'conv_category.bias'] and unexpected == []
    inputs = make_inputs()
    torch.testing.assert_close(with_aux(inputs), plain(inputs))


def test_weighted_losses_and_names():
    head = MODELS.build(dict(SMALL, category_aux=dict(num_classes=4, loss_decode=[
        dict(type='CrossEntropyLoss', avg_non_ignore=True, loss_weight=0.5),
        dict(type='CrossEntropyLoss', avg_non_ignore=True, loss_weight=2.0,
             loss_name='loss_x')]))).train()
    refs = torch.zeros(2, 64, 64).long()
    maps = torch.randint(0, 4, (2, 64, 64))
    losses = head.loss(make_inputs(), make_samples(refs, maps), None)
    torch.testing.assert_close(losses['category_loss_x'], 4 * losses['category_loss_ce'])


def test_bad_samples_name_the_problem():
    head = MODELS.build(dict(SMALL, category_aux=AUX)).train()
    refs = torch.zeros(2, 64, 64).long()
    with pytest.raises(KeyError, match='sample 1 has no gt_category_map.*LoadCategoryMap'):
        head.loss(make_inputs(), make_samples(refs, [torch.zeros(64, 64), None]), None)
    with pytest.raises(ValueError, match='category id 7.*num_classes=4'):
        head.loss(make_inputs(), make_samples(refs, torch.full((2, 64, 64), 7)), None)


@pytest.mark.parametrize('aux, match', [
    (dict(), 'num_classes=int'),
    (dict(num_classes=1), 'num_classes=int'),
    (dict(num_classes=True), 'num_classes=int'),
    (dict(num_classes=4, weight=1.0), 'num_classes=int'),
])
def test_bad_config(aux, match):
    with pytest.raises(ValueError, match=match):
        MODELS.build(dict(SMALL, category_aux=aux))


def test_needs_a_head_with_its_last_features():

    class NoFeatures(RISBaseDecodeHead):

        def forward(self, inputs):
            return self.cls_seg(inputs[0][0])

    with pytest.raises(ValueError, match='NoFeatures does not implement _forward_feature'):
        NoFeatures(4, 4, category_aux=AUX)
    assert isinstance(MODELS.build(dict(SMALL, category_aux=AUX)), LAVTHead)


def test_segmentor_logs_the_category_loss_under_decode():
    from tiny_configs import tiny_lavt_model, tiny_text_encoder
    torch.manual_seed(0)
    cfg = tiny_lavt_model(text_encoder=tiny_text_encoder(vocab_size=50))
    cfg['decode_head']['category_aux'] = AUX
    model = MODELS.build(cfg).train()
    refs = (torch.rand(2, 64, 64) > 0.5).long()
    samples = make_samples(refs, torch.randint(0, 4, (2, 64, 64)))
    for sample in samples:
        sample.set_data(dict(input_ids=torch.tensor([1, 7, 9, 2, 0]),
                             attention_mask=torch.tensor([1, 1, 1, 1, 0])))
    losses = model.loss(torch.randn(2, 3, 64, 64), samples)
    assert {'decode.loss_ce', 'decode.category_loss_ce', 'decode.category_acc'} <= set(losses)
    _, log_vars = model.parse_losses(losses)
    # the category loss is part of the optimised total
    total = sum(v for k, v in log_vars.items() if 'loss' in k and k != 'loss')
    assert float(log_vars['loss']) == pytest.approx(float(total), rel=1e-5)
    assert 'decode.category_loss_ce' in log_vars
