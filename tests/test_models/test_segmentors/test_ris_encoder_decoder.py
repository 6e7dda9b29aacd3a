"""Tests of RISEncoderDecoder (loss / predict / tensor modes, auxiliary heads,
initialisation) on a tiny LAVT and hand-made batches.

Expected values are computed independently of the segmentor's own code paths:

* the decode loss is recomputed from the tensor-mode logits with
  ``F.interpolate`` + ``F.cross_entropy(weight=[0.9, 1.1])`` (LAVT's loss);
* predictions are recomputed from the tensor-mode logits with
  ``F.interpolate`` (to the padded input, crop, then to the requested size)
  and ``argmax``;
* the pretrained text encoder is compared with the tensors read directly from
  the package's ``model.safetensors``.
"""
import os.path as osp

import pytest
import torch
import torch.nn.functional as F
from mmengine.model import BaseModule
from mmengine.structures import PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from safetensors.torch import load_file
from torch import nn

import mmseg_ris  # noqa: F401  (registers the models)
from mmseg_ris.models.segmentors.ris_encoder_decoder import (
    RISEncoderDecoder, stack_text_inputs)
from mmseg_ris.utils import resolve_path
from tiny_configs import TOKENIZER, tiny_lavt_model, tiny_text_encoder

VOCAB = 50
NUM_TOKENS = 8
INPUT_HW = (64, 64)
# Sample 0 fills the input; sample 1 was padded by 4 columns on the right and
# 8 rows at the bottom (mmseg's ``padding_size`` = left, right, top, bottom).
IMG_SHAPES = [(64, 64), (56, 60)]
PADDINGS = [[0, 0, 0, 0], [0, 4, 0, 8]]
ORI_SHAPES = [(40, 50), (70, 30)]
# Real tokens per expression; the rest of the NUM_TOKENS positions are padding.
LENGTHS = [5, NUM_TOKENS]
# The last PWAM's gated stream ``x + gate(r) * r`` feeds nothing: Swin's last
# stage has no patch merging and the decoder reads ``r`` (LAVT's design).
UNUSED_TRAINABLE = {'backbone.fusions.3.gate.fc1.weight',
                    'backbone.fusions.3.gate.fc2.weight'}


@pytest.fixture(scope='module', autouse=True)
def single_thread():
    """One intra-op thread: faster on the shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def build(seed=0, **kwargs):
    """Build the tiny segmentor with a small vocabulary and initialise it."""
    kwargs.setdefault('text_encoder', tiny_text_encoder(vocab_size=VOCAB))
    torch.manual_seed(seed)
    model = MODELS.build(tiny_lavt_model(**kwargs))
    model.init_weights()
    return model


def make_batch(seed=0, with_tokens=True):
    """Two images with expressions of different lengths and 0/1 masks."""
    g = torch.Generator().manual_seed(seed)
    inputs = torch.randn(2, 3, *INPUT_HW, generator=g)
    samples = []
    for i in range(2):
        ds = SegDataSample(metainfo=dict(
            img_path=f'/data/images/COCO_train2014_{i:012d}.jpg',
            img_shape=IMG_SHAPES[i],
            pad_shape=INPUT_HW,
            padding_size=PADDINGS[i],
            ori_shape=ORI_SHAPES[i]))
        if with_tokens:
            ids = torch.randint(1, VOCAB, (NUM_TOKENS, ), generator=g)
            mask = torch.zeros(NUM_TOKENS, dtype=torch.long)
            mask[:LENGTHS[i]] = 1
            ids[LENGTHS[i]:] = 0  # [PAD]
            ds.set_data(dict(input_ids=ids, attention_mask=mask))
        gt = (torch.rand(1, *INPUT_HW, generator=g) > 0.7).long()
        ds.gt_sem_seg = PixelData(data=gt)
        samples.append(ds)
    return inputs, samples


def reference_logits(model, inputs, samples):
    """Tensor-mode logits resized as the design says, without the segmentor.

    Logits (stride 4) -> bilinear to the padded input -> crop the padding ->
    bilinear to ``img_shape`` (``'input'``) or ``ori_shape`` (``'original'``).
    """
    with torch.no_grad():
        logits = model(inputs, samples, mode='tensor')
        logits = F.interpolate(logits, size=INPUT_HW, mode='bilinear',
                               align_corners=True)
    out = []
    for i, ds in enumerate(samples):
        left, right, top, bottom = PADDINGS[i]
        crop = logits[i:i + 1, :, top:INPUT_HW[0] - bottom,
                      left:INPUT_HW[1] - right]
        key = ('img_shape' if model.test_cfg['output_size'] == 'input' else
               'ori_shape')
        size = tuple(ds.metainfo[key])
        if tuple(crop.shape[-2:]) != size:
            crop = F.interpolate(crop, size=size, mode='bilinear',
                                 align_corners=True)
        out.append(crop[0])
    return out


# --------------------------------------------------------------------- loss
def test_loss_value_and_gradient_flow():
    # Layer 0 trainable, layer 1 and the embeddings frozen (LAVT freezes the
    # embeddings and the top layers).
    model = build(text_encoder=tiny_text_encoder(
        vocab_size=VOCAB, trainable_layers=[0], train_embeddings=False))
    model.train()
    inputs, samples = make_batch()

    losses = model(inputs, samples, mode='loss')
    assert set(losses) == {'decode.loss_ce', 'decode.acc_seg'}
    loss = losses['decode.loss_ce']
    assert loss.dim() == 0 and torch.isfinite(loss) and loss.requires_grad

    # LAVT's loss from the raw logits: bilinear (align_corners) to the label
    # size, then class-weighted cross entropy (weighted mean). Train-mode BN
    # uses batch statistics, so a second forward gives the same logits.
    logits = model(inputs, samples, mode='tensor')
    assert logits.shape == (2, 2, INPUT_HW[0] // 4, INPUT_HW[1] // 4)
    labels = torch.cat([ds.gt_sem_seg.data for ds in samples])
    up = F.interpolate(logits, size=INPUT_HW, mode='bilinear',
                       align_corners=True)
    expected = F.cross_entropy(up, labels, weight=torch.tensor([0.9, 1.1]))
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    expected_acc = 100.0 * (up.argmax(1) == labels).float().mean()
    torch.testing.assert_close(losses['decode.acc_seg'].reshape(()),
                               expected_acc, rtol=1e-4, atol=1e-3)

    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    frozen = set(grads) - trainable

    # Exactly the text encoder's embeddings and layer 1 are frozen ...
    bert = 'backbone.text_encoder.bert.'
    assert frozen and all(
        n.startswith((bert + 'embeddings.', bert + 'encoder.layer.1.'))
        for n in frozen)
    assert any(n.startswith(bert + 'embeddings.') for n in frozen)
    assert any(n.startswith(bert + 'encoder.layer.1.') for n in frozen)
    # ... and get no gradient.
    assert all(grads[n] is None for n in frozen)
    # Every trainable parameter takes part in the loss, except the last gate.
    missing = {n for n in trainable if grads[n] is None}
    assert missing == UNUSED_TRAINABLE

    def nonzero(prefix):
        names = [n for n in trainable - UNUSED_TRAINABLE
                 if n.startswith(prefix)]
        assert names, prefix
        return all(torch.isfinite(grads[n]).all() for n in names) and any(
            grads[n].abs().sum() > 0 for n in names)

    # Swin (patch embedding, every stage, the output norms), every PWAM,
    # the trainable BERT layer and the decoder receive real gradients.
    for prefix in ['backbone.patch_embed.', 'backbone.stages.0.',
                   'backbone.stages.1.', 'backbone.stages.2.',
                   'backbone.stages.3.', 'backbone.norm0.', 'backbone.norm3.',
                   'backbone.fusions.0.', 'backbone.fusions.1.',
                   'backbone.fusions.2.', 'backbone.fusions.3.',
                   bert + 'encoder.layer.0.', 'decode_head.merges.',
                   'decode_head.conv_seg.']:
        assert nonzero(prefix), prefix
    for n in [bert + 'encoder.layer.0.attention.self.query.weight',
              'backbone.fusions.0.key_proj.weight',
              'backbone.stages.0.blocks.0.attn.w_msa.qkv.weight']:
        assert grads[n].abs().sum() > 0, n


# ------------------------------------------------------------------ predict
@pytest.mark.parametrize('output_size', ['input', 'original'])
def test_predict_resizes_and_thresholds(output_size):
    model = build(output_size=output_size).eval()
    inputs, samples = make_batch()
    expected = reference_logits(model, inputs, samples)
    with torch.no_grad():
        results = model(inputs, samples, mode='predict')
    key = 'img_shape' if output_size == 'input' else 'ori_shape'
    for i, ds in enumerate(results):
        size = tuple(ds.metainfo[key])
        assert ds.seg_logits.data.shape == (2, *size)
        assert ds.pred_sem_seg.data.shape == (1, *size)
        assert ds.pred_sem_seg.data.dtype == torch.long
        assert set(ds.pred_sem_seg.data.unique().tolist()) <= {0, 1}
        torch.testing.assert_close(ds.seg_logits.data, expected[i],
                                   rtol=1e-5, atol=1e-6)
        assert torch.equal(ds.pred_sem_seg.data[0],
                           ds.seg_logits.data.argmax(0))


def test_tensor_mode_is_stride_4():
    model = build().eval()
    inputs, samples = make_batch()
    with torch.no_grad():
        out = model(inputs, samples, mode='tensor')
    assert out.shape == (2, 2, 16, 16)
    assert torch.isfinite(out).all()


def test_padding_tokens_never_influence_outputs():
    model = build().eval()
    inputs, samples = make_batch()
    with torch.no_grad():
        before = [ds.seg_logits.data.clone()
                  for ds in model.predict(inputs, samples)]

    # New ids wherever attention_mask is 0 (sample 0 has 3 padded positions).
    _, padded = make_batch()
    g = torch.Generator().manual_seed(123)
    changed = 0
    for ds in padded:
        pad = ds.attention_mask == 0
        ds.input_ids[pad] = torch.randint(1, VOCAB, (int(pad.sum()), ),
                                          generator=g)
        changed += int(pad.sum())
    assert changed == NUM_TOKENS - LENGTHS[0]
    with torch.no_grad():
        after = [ds.seg_logits.data for ds in model.predict(inputs, padded)]
    for b, a in zip(before, after):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)

    # Control: changing a real token does change the prediction.
    _, real = make_batch()
    real[0].input_ids[0] = (real[0].input_ids[0] % (VOCAB - 1)) + 1
    with torch.no_grad():
        moved = model.predict(inputs, real)[0].seg_logits.data
    assert (moved - before[0]).abs().max() > 1e-4


def test_cached_frozen_text_encoder_gives_the_same_results():
    """LAVT calls its whole (frozen) text encoder at once, so the encoder's cache serves it."""
    frozen = tiny_text_encoder(vocab_size=VOCAB, trainable_layers=[], train_embeddings=False)
    plain = build(text_encoder=frozen).eval()
    cached = build(text_encoder=dict(frozen, cache_size=8)).eval()
    inputs, samples = make_batch()
    with torch.no_grad():
        want = [ds.seg_logits.data.clone() for ds in plain.predict(inputs, samples)]
        for _ in range(2):  # the second pass is answered from the cache
            _, samples = make_batch()
            got = [ds.seg_logits.data for ds in cached.predict(inputs, samples)]
            for a, b in zip(got, want):
                torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    assert len(cached.backbone.text_encoder._cache) == 2
    cached.train()
    losses = cached.loss(inputs, samples)
    assert all(torch.isfinite(v).all() for v in losses.values())


# ------------------------------------------------------------------- errors
def test_missing_tokens_name_the_image():
    model = build().eval()
    inputs, samples = make_batch()
    del samples[1].input_ids
    with pytest.raises(KeyError, match='COCO_train2014_000000000001.jpg'):
        model.predict(inputs, samples)
    _, bare = make_batch(with_tokens=False)
    with pytest.raises(KeyError, match='COCO_train2014_000000000000.jpg'):
        model.loss(inputs, bare)


def test_stack_text_inputs():
    _, samples = make_batch()
    ids, mask = stack_text_inputs(samples)
    assert ids.dtype == mask.dtype == torch.int64
    assert ids.shape == mask.shape == (2, NUM_TOKENS)
    assert mask.sum(1).tolist() == LENGTHS
    assert torch.equal(ids[1], samples[1].input_ids)
    samples[1].set_data(dict(input_ids=torch.ones(NUM_TOKENS + 1).long(),
                             attention_mask=torch.ones(NUM_TOKENS + 1).long()))
    with pytest.raises(ValueError, match='differ in length'):
        stack_text_inputs(samples)


def test_invalid_output_size():
    with pytest.raises(ValueError, match="output_size.*'resized'"):
        MODELS.build(tiny_lavt_model(
            text_encoder=tiny_text_encoder(vocab_size=VOCAB),
            output_size='resized'))


# ---------------------------------------------------------- auxiliary heads
CALLS = []


@MODELS.register_module(force=True)
class _SegmentorAwareAuxHead(BaseModule):
    """Auxiliary head that reuses the segmentor (like Mask Grounding)."""

    requires_segmentor = True

    def __init__(self, init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        self.proj = nn.Linear(tiny_text_encoder()['config']['hidden_size'], 1)

    def forward(self, inputs):
        CALLS.append('forward')
        return inputs

    def loss(self, inputs, data_samples, train_cfg, segmentor=None):
        CALLS.append(('loss', segmentor))
        _, lang, lang_mask = inputs
        # Mean over real words of a linear score.
        score = self.proj(lang).squeeze(-1) * lang_mask
        return dict(loss_ground=score.sum() / lang_mask.sum())


@MODELS.register_module(force=True)
class _PlainAuxHead(BaseModule):
    """Auxiliary head without ``requires_segmentor``: its ``loss`` takes no
    ``segmentor`` argument, so passing one would raise a TypeError."""

    def __init__(self, init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        self.scale = nn.Parameter(torch.tensor(2.0))

    def loss(self, inputs, data_samples, train_cfg):
        CALLS.append('plain_loss')
        feats, _, _ = inputs
        return dict(loss_feat=self.scale * feats[-1].pow(2).mean())


def test_auxiliary_head_receives_segmentor_and_adds_aux_losses():
    CALLS.clear()
    model = build(auxiliary_head=dict(type='_SegmentorAwareAuxHead')).train()
    inputs, samples = make_batch()
    losses = model.loss(inputs, samples)
    assert set(losses) == {'decode.loss_ce', 'decode.acc_seg',
                           'aux.loss_ground'}
    assert CALLS == [('loss', model)]

    # Independent value: the same score on the backbone's language features.
    with torch.no_grad():
        ids, mask = stack_text_inputs(samples)
        _, lang, _ = model.backbone(inputs, ids, mask)
        score = model.auxiliary_head.proj(lang).squeeze(-1) * mask
        expected = score.sum() / mask.sum()
    torch.testing.assert_close(losses['aux.loss_ground'].detach(), expected)
    losses['aux.loss_ground'].backward()
    assert model.auxiliary_head.proj.weight.grad.abs().sum() > 0


def test_several_auxiliary_heads_are_numbered():
    CALLS.clear()
    model = build(auxiliary_head=[dict(type='_SegmentorAwareAuxHead'),
                                  dict(type='_PlainAuxHead')]).train()
    inputs, samples = make_batch()
    losses = model.loss(inputs, samples)
    assert set(losses) == {'decode.loss_ce', 'decode.acc_seg',
                           'aux_0.loss_ground', 'aux_1.loss_feat'}
    assert CALLS == [('loss', model), 'plain_loss']
    assert torch.isfinite(losses['aux_1.loss_feat'])


def test_predictions_do_not_depend_on_auxiliary_heads():
    plain = build(seed=0).eval()
    with_aux = build(seed=1, auxiliary_head=[
        dict(type='_SegmentorAwareAuxHead'), dict(type='_PlainAuxHead')
    ]).eval()
    result = with_aux.load_state_dict(plain.state_dict(), strict=False)
    assert result.unexpected_keys == []
    assert result.missing_keys and all(
        k.startswith('auxiliary_head.') for k in result.missing_keys)

    inputs, samples = make_batch()
    _, samples_aux = make_batch()
    CALLS.clear()
    with torch.no_grad():
        a = plain.predict(inputs, samples)
        b = with_aux.predict(inputs, samples_aux)
        ta = plain(inputs, samples, mode='tensor')
        tb = with_aux(inputs, samples_aux, mode='tensor')
    assert CALLS == []  # prediction never runs an auxiliary head
    assert torch.equal(ta, tb)
    for x, y in zip(a, b):
        assert torch.equal(x.seg_logits.data, y.seg_logits.data)
        assert torch.equal(x.pred_sem_seg.data, y.pred_sem_seg.data)


# ------------------------------------------------------------------- init
def test_init_weights_keeps_pretrained_text_encoder():
    text_encoder = dict(
        type='BertLanguageEncoder',
        pretrained=TOKENIZER,  # the MiniLM weights ship with the tokenizer
        stages=(6, ),
        trainable_layers=None,
        train_embeddings=False)
    torch.manual_seed(0)
    model = MODELS.build(tiny_lavt_model(text_encoder=text_encoder))
    assert isinstance(model, RISEncoderDecoder)
    swin_before = {
        n: p.detach().clone()
        for n, p in model.backbone.named_parameters()
        if not n.startswith(('text_encoder.', 'fusions.'))
    }
    model.init_weights()

    # Every BERT weight equals the tensor in the package's safetensors file.
    reference = load_file(
        osp.join(resolve_path(TOKENIZER), 'model.safetensors'))
    bert = dict(model.backbone.text_encoder.bert.named_parameters())
    assert len(bert) > 90
    for name, param in bert.items():
        assert name in reference, name
        assert torch.equal(param.detach(), reference[name].float()), name

    # Swin got mmseg's init: Linear weights re-drawn (normal, std 0.02),
    # Linear biases 0, LayerNorms 1 / 0, position tables re-drawn.
    linears = [m for m in model.backbone.stages.modules()
               if isinstance(m, nn.Linear)]
    assert len(linears) >= 16
    for m in linears:
        name = next(n for n, mm in model.backbone.named_modules() if mm is m)
        assert not torch.equal(m.weight.detach(),
                               swin_before[name + '.weight']), name
        if m.bias is not None:
            assert torch.equal(m.bias.detach(), torch.zeros_like(m.bias))
            assert not torch.equal(swin_before[name + '.bias'],
                                   torch.zeros_like(m.bias))
    big = model.backbone.stages[3].blocks[0].ffn.layers[0][0].weight
    assert 0.015 < big.std().item() < 0.025
    for name, p in model.backbone.named_parameters():
        if 'relative_position_bias_table' in name:
            assert not torch.equal(p.detach(), swin_before[name]), name
        if name.startswith('norm') or '.norm1.' in name or '.norm2.' in name:
            value = 1.0 if name.endswith('weight') else 0.0
            assert torch.equal(p.detach(), torch.full_like(p, value)), name
