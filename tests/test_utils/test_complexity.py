"""Parameter and FLOP counting (mmseg_ris.utils.complexity) against hand formulas, on the tiny LAVT."""
import pytest
import torch
import torch.nn.functional as F
from mmengine.registry import init_default_scope
from torch import nn

import mmseg_ris  # noqa: F401  (registers the models)
from mmseg.registry import MODELS
from mmseg_ris.utils.complexity import (RISTensorForward, analyze_complexity, format_complexity,
                                        make_flop_inputs, model_parts, ris_flop_analyzer,
                                        unused_parameters)
from tiny_configs import (BERT_HIDDEN, EMBED_DIMS, HEAD_CHANNELS, IMG_SIZE, MAX_TOKENS,
                          tiny_lavt_model)

PREPROCESSOR = dict(type='SegDataPreProcessor', mean=[123.675, 116.28, 103.53],
                    std=[58.395, 57.12, 57.375], bgr_to_rgb=True, pad_val=0, seg_pad_val=255,
                    size=(IMG_SIZE, IMG_SIZE))


@pytest.fixture(scope='module')
def tiny():
    init_default_scope('mmseg')
    torch.manual_seed(0)
    model = MODELS.build(tiny_lavt_model(data_preprocessor=PREPROCESSOR)).eval()
    # freeze something, so that trainable != total is checked too
    for p in model.backbone.text_encoder.parameters():
        p.requires_grad_(False)
    inputs = make_flop_inputs(model, (IMG_SIZE, IMG_SIZE), MAX_TOKENS)
    analyzer = ris_flop_analyzer(RISTensorForward(model), inputs)
    by_module = {k[len('segmentor.'):]: v for k, v in analyzer.by_module().items()
                 if k.startswith('segmentor.')}
    report = analyze_complexity(model, (IMG_SIZE, IMG_SIZE), MAX_TOKENS)
    with torch.no_grad():
        logits = RISTensorForward(model)(*inputs)
    return model, inputs, by_module, report, logits


def _numel(module):
    return sum(p.numel() for p in module.parameters())


def test_flop_inputs_are_one_preprocessed_sample(tiny):
    _, (img, ids, mask), _, _, _ = tiny
    assert img.shape == (1, 3, IMG_SIZE, IMG_SIZE) and img.dtype == torch.float32
    assert ids.shape == mask.shape == (1, MAX_TOKENS) and ids.dtype == torch.long
    assert ids[0, 0] == 101 and mask[0, 0] == 1  # [CLS]


def test_parameter_counts_equal_numel_sums(tiny):
    model, _, _, report, _ = tiny
    params = list(model.parameters())
    assert report['params']['total'] == sum(p.numel() for p in params)
    assert report['params']['trainable'] == sum(p.numel() for p in params if p.requires_grad)
    assert report['params']['frozen'] == _numel(model.backbone.text_encoder)
    parts = {r['name']: r for r in report['parts']}
    assert list(parts) == ['backbone (rest)', 'backbone.text_encoder', 'backbone.fusions',
                           'decode_head']
    te, fus = model.backbone.text_encoder, model.backbone.fusions
    assert parts['backbone.text_encoder']['params'] == _numel(te)
    assert parts['backbone.text_encoder']['trainable'] == 0
    assert parts['backbone.fusions']['params'] == parts['backbone.fusions']['trainable'] == _numel(fus)
    assert parts['backbone (rest)']['params'] == _numel(model.backbone) - _numel(te) - _numel(fus)
    assert parts['decode_head']['params'] == _numel(model.decode_head)
    assert sum(r['params'] for r in report['parts']) == report['params']['total']
    assert sum(r['trainable'] for r in report['parts']) == report['params']['trainable']


def test_conv_and_linear_flops_equal_hand_formula(tiny):
    model, _, by_module, _, logits = tiny
    # the final 1x1 classifier runs at the logits' resolution (stride 4): Cout * H * W * Cin
    h, w = logits.shape[-2:]
    assert (h, w) == (IMG_SIZE // 4, IMG_SIZE // 4)
    conv_seg = model.decode_head.conv_seg
    assert (conv_seg.in_channels, conv_seg.out_channels, conv_seg.kernel_size) == (HEAD_CHANNELS, 2,
                                                                                   (1, 1))
    assert by_module['decode_head.conv_seg'] == 2 * h * w * HEAD_CHANNELS
    # Swin's patch embedding: a 4x4 stride-4 conv from 3 to EMBED_DIMS channels
    proj = model.backbone.patch_embed.projection
    assert proj.kernel_size == (4, 4) and proj.stride == (4, 4)
    out_hw = (IMG_SIZE // 4) ** 2
    assert by_module['backbone.patch_embed.projection'] == EMBED_DIMS * out_hw * 3 * 4 * 4
    # BERT query projection: tokens x Cin x Cout
    layer = 'backbone.text_encoder.bert.encoder.layer.0.attention.self'
    assert by_module[f'{layer}.query'] == MAX_TOKENS * BERT_HIDDEN * BERT_HIDDEN
    # the whole self-attention: q, k, v projections + QK^T + attn @ V (all heads together)
    assert by_module[layer] == 3 * MAX_TOKENS * BERT_HIDDEN ** 2 + 2 * MAX_TOKENS ** 2 * BERT_HIDDEN


def test_parts_sum_to_total_and_match_modules(tiny):
    _, _, by_module, report, _ = tiny
    parts = {r['name']: r['flops'] for r in report['parts']}
    assert sum(parts.values()) == report['flops'] > 0
    assert parts['backbone.text_encoder'] == by_module['backbone.text_encoder'] > 0
    assert parts['backbone.fusions'] == by_module['backbone.fusions'] > 0
    assert parts['backbone (rest)'] == (by_module['backbone'] - by_module['backbone.text_encoder']
                                        - by_module['backbone.fusions'])
    assert parts['decode_head'] == by_module['decode_head']
    assert sum(report['flops_by_operator'].values()) == report['flops']
    # element-wise operators have no FLOP formula: reported, not counted
    assert 'aten::gelu' in report['unsupported_ops'] and 'aten::add' in report['unsupported_ops']
    assert 'aten::im2col' not in report['unsupported_ops']  # declared zero-FLOP
    text = format_complexity(report)
    assert 'backbone.text_encoder' in text and 'operators skipped' in text


class _Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(10, 7)
        self.conv = nn.Conv2d(3, 4, 3, padding=1, groups=1)
        self.dw = nn.Conv2d(4, 4, 3, padding=1, groups=4)
        self.unused = nn.Linear(3, 3)

    def forward(self, x, img):
        return self.fc(x).sigmoid().sum() + self.dw(self.conv(img)).sum()


def test_toy_hand_formula_and_unsupported_ops():
    x, img = torch.randn(2, 10), torch.randn(1, 3, 8, 8)
    analyzer = ris_flop_analyzer(_Toy(), (x, img))
    fc = 2 * 10 * 7                      # batch x in x out
    conv = 4 * 8 * 8 * 3 * 3 * 3         # Cout x H x W x Cin x kh x kw
    dw = 4 * 8 * 8 * 1 * 3 * 3           # depth-wise: Cin / groups = 1
    assert analyzer.by_module()['fc'] == fc
    assert analyzer.by_module()['conv'] == conv
    assert analyzer.by_module()['dw'] == dw
    assert analyzer.total() == fc + conv + dw
    assert analyzer.unsupported_ops()['aten::sigmoid'] == 1


class _Attention(nn.Module):
    def __init__(self, fused):
        super().__init__()
        self.fused = fused

    def forward(self, q, k, v):
        if self.fused:
            return F.scaled_dot_product_attention(q, k, v)
        attn = (q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5).softmax(-1)
        return attn @ v


def test_sdpa_counted_like_the_explicit_matmuls():
    q, k, v = torch.randn(2, 3, 5, 8), torch.randn(2, 3, 7, 8), torch.randn(2, 3, 7, 4)
    hand = 2 * 3 * 5 * 7 * (8 + 4)
    fused = ris_flop_analyzer(_Attention(True), (q, k, v))
    explicit = ris_flop_analyzer(_Attention(False), (q, k, v))
    assert fused.total() == hand
    assert explicit.total() == hand  # mmengine's matmul handle, independent of ours
    assert fused.by_operator()['scaled_dot_product_attention'] == hand


class _Uses(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.emb = nn.Embedding(10, 4)
        self.mha = nn.MultiheadAttention(4, 1, batch_first=True)  # out_proj is used, never called
        self.unused = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
        self.part = nn.Module()
        self.part.a = nn.Linear(4, 4)
        self.part.b = nn.Linear(4, 4)

    def forward(self, ids):
        x = self.emb.weight[ids] + self.fc(self.emb(ids))
        return self.part.a(self.mha(x, x, x)[0])


def test_unused_parameters_sees_direct_uses():
    m = _Uses().eval()
    assert unused_parameters(m, m, (torch.tensor([[1, 2, 3]]), )) == ['part.b', 'unused']


def test_model_parts_split_the_backbone(tiny):
    model = tiny[0]
    assert model_parts(model) == [
        ('data_preprocessor', 'data_preprocessor', ()),
        ('backbone (rest)', 'backbone', ('backbone.text_encoder', 'backbone.fusions')),
        ('backbone.text_encoder', 'backbone.text_encoder', ()),
        ('backbone.fusions', 'backbone.fusions', ()),
        ('decode_head', 'decode_head', ()),
    ]


def test_bad_input_size(tiny):
    with pytest.raises(ValueError, match='two positive integers'):
        analyze_complexity(tiny[0], (64, ), 20)
    with pytest.raises(ValueError, match='num_tokens must be >= 3'):
        analyze_complexity(tiny[0], (64, 64), 2)


class _MaskedAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.mha = nn.MultiheadAttention(8, 2, batch_first=True)

    def forward(self, x, mask):
        return self.mha(x, x, x, attn_mask=mask)[0]  # with weights: baddbmm + bmm, not SDPA


def test_baddbmm_of_masked_multihead_attention():
    b, n, c, heads = 3, 5, 8, 2
    x, mask = torch.randn(b, n, c), torch.zeros(n, n)
    analyzer = ris_flop_analyzer(_MaskedAttention().eval(), (x, mask))
    # in-projection (3 linears), QK^T and attn @ V per head, out-projection
    hand = 3 * b * n * c * c + 2 * b * heads * n * n * (c // heads) + b * n * c * c
    assert analyzer.total() == hand
    assert analyzer.by_operator()['baddbmm'] == b * heads * n * n * (c // heads)
    assert 'aten::baddbmm' not in analyzer.unsupported_ops()
