"""The benchmark's measuring functions on the tiny LAVT at 64x64, and the CLI end to end."""
import copy
import json
import math
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch
from mmengine.config import Config
from torch import nn

from mmseg_ris.datasets import generate_synthetic_refcoco
from mmseg_ris.utils.benchmark import (BERT_BASE_CONFIG, FALLBACK_TOKENIZER, PeakMemory,
                                       build_benchmark_model, count_parameters, input_size_of,
                                       machine_info, make_synthetic_batch, measure_data_pipeline,
                                       measure_inference, measure_train_step,
                                       prepare_benchmark_config, set_input_size, summarize_times)

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TINY = osp.join(ROOT, 'configs/lavt/lavt_tiny_synthetic.py')
FULL = osp.join(ROOT, 'configs/lavt/lavt_swin-b_bert-base_4xb8-40e_refcoco-480x480.py')
SIZE = (64, 64)
MIB = 1024.0**2


@pytest.fixture(scope='module', autouse=True)
def one_thread():
    # 2 shared cores: one thread keeps the tests fast and their timings steady
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope='module')
def tiny_cfg():
    cfg = Config.fromfile(TINY)
    set_input_size(cfg, SIZE)
    prepare_benchmark_config(cfg)
    return cfg


@pytest.fixture(scope='module')
def tiny_model(tiny_cfg):
    return build_benchmark_model(tiny_cfg, 'cpu')


@pytest.fixture(scope='module')
def synthetic_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('bench_data'))
    stats = generate_synthetic_refcoco(root, 8, seed=3)
    return root, stats['datasets']['refcoco']['unc']['splits']['train']['refs']


def _walk_dicts(node):
    if isinstance(node, dict):
        yield node
        for v in node.values():
            yield from _walk_dicts(v)
    elif isinstance(node, (list, tuple)):
        for v in node:
            yield from _walk_dicts(v)


# ------------------------------------------------------------------------------------------ config
def test_full_lavt_config_is_rewritten_for_random_init():
    cfg = Config.fromfile(FULL)
    assert cfg.model.backbone.text_encoder.pretrained == 'pretrained/bert-base-uncased'
    notes = prepare_benchmark_config(cfg)
    enc = cfg.model.backbone.text_encoder
    assert enc.pretrained is None
    # BERT-base sizes of the brief, independent of the module's constant
    assert {k: enc.config[k] for k in ('vocab_size', 'hidden_size', 'num_hidden_layers',
                                       'num_attention_heads', 'intermediate_size',
                                       'max_position_embeddings')} == dict(
        vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
        intermediate_size=3072, max_position_embeddings=512)
    # LAVT's freezing is kept
    assert list(enc.trainable_layers) == list(range(10)) and enc.train_embeddings is False
    assert cfg.model.backbone.init_cfg is None
    types = [d.get('type') for d in _walk_dicts(cfg.model)]
    assert 'SyncBN' not in types and 'BN' in types
    for where in ('train_pipeline', 'test_pipeline'):
        tok = [t for t in cfg[where] if t['type'] == 'TokenizeText'][0]
        assert tok['tokenizer'] == FALLBACK_TOKENIZER
    assert [t for t in cfg.train_dataloader.dataset.pipeline
            if t['type'] == 'TokenizeText'][0]['tokenizer'] == FALLBACK_TOKENIZER
    assert cfg.load_from is None
    joined = '\n'.join(notes)
    assert 'SyncBN -> BN' in joined and 'Pretrained -> None' in joined and 'random BERT' in joined
    assert input_size_of(cfg) == (480, 480)


def test_text_encoder_overrides_survive_and_local_architecture_is_read(tmp_path):
    folder = tmp_path / 'mini-bert'
    folder.mkdir()
    (folder / 'config.json').write_text(json.dumps(dict(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
        vocab_size=500, model_type='bert', architectures=['BertModel'])))
    cfg = Config(dict(model=dict(type='RISEncoderDecoder', backbone=dict(
        type='LangSwinTransformer',
        text_encoder=dict(type='BertLanguageEncoder', pretrained=str(folder),
                          config=dict(hidden_dropout_prob=0.0))))))
    prepare_benchmark_config(cfg)
    enc = cfg.model.backbone.text_encoder
    assert enc.pretrained is None
    assert (enc.config['hidden_size'], enc.config['num_hidden_layers'], enc.config['vocab_size'],
            enc.config['intermediate_size']) == (64, 2, 500, 128)
    assert enc.config['hidden_dropout_prob'] == 0.0
    # keys that do not fix the architecture are not copied
    assert 'model_type' not in enc.config and 'architectures' not in enc.config
    assert enc.config['max_position_embeddings'] == BERT_BASE_CONFIG['max_position_embeddings']


def test_text_encoder_cache_is_switched_off():
    """The timed runs repeat one batch: a cache would answer it without encoding."""
    cfg = Config.fromfile(TINY)
    assert cfg.model.backbone.text_encoder.cache_size > 0
    notes = prepare_benchmark_config(cfg)
    assert cfg.model.backbone.text_encoder.cache_size == 0
    assert any('cache_size' in n and '-> 0' in n for n in notes)


def test_config_errors():
    with pytest.raises(KeyError, match='no `model`'):
        prepare_benchmark_config(Config(dict(train_dataloader=dict())))
    with pytest.raises(ValueError, match='--input-size'):
        input_size_of(Config(dict(model=dict(type='X'))))
    cfg = Config(dict(model=dict(data_preprocessor=dict(size=(8, 8)))))
    with pytest.raises(ValueError, match='two positive integers'):
        set_input_size(cfg, (0, 64))


def test_set_input_size_writes_preprocessor_and_resize(tiny_cfg):
    cfg = copy.deepcopy(tiny_cfg)
    set_input_size(cfg, (48, 80))
    assert tuple(cfg.model.data_preprocessor.size) == (48, 80)
    resize = [t for t in cfg.train_dataloader.dataset.pipeline if t['type'] == 'Resize'][0]
    assert tuple(resize['scale']) == (80, 48)  # mmcv order (w, h)
    assert input_size_of(cfg) == (48, 80)


# ------------------------------------------------------------------------------------ small pieces
def test_count_parameters_hand_computed():
    shared = nn.Linear(3, 4)  # 12 + 4
    frozen = nn.Linear(2, 2)  # 4 + 2
    frozen.requires_grad_(False)
    model = nn.ModuleDict(dict(a=shared, b=shared, c=frozen))
    assert count_parameters(model) == dict(total=22, trainable=16, frozen=6)


def test_count_parameters_of_tiny_model(tiny_model):
    total = trainable = 0
    for _, p in tiny_model.named_parameters():
        total += p.numel()
        trainable += p.numel() if p.requires_grad else 0
    counts = count_parameters(tiny_model)
    assert counts == dict(total=total, trainable=trainable, frozen=total - trainable)
    # the tiny config freezes the whole text encoder (trainable_layers=[], train_embeddings=False) and
    # nothing else
    text = tiny_model.backbone.text_encoder
    assert counts['frozen'] == sum(p.numel() for p in text.parameters())
    assert counts['frozen'] > sum(p.numel() for p in text.bert.embeddings.parameters()) > 0


def test_summarize_times_hand_computed():
    s = summarize_times([1.0, 2.0, 3.0, 6.0], batch_size=2)
    assert s['per_batch_s']['mean'] == pytest.approx(3.0)
    assert s['per_batch_s']['median'] == pytest.approx(2.5)
    assert s['per_batch_s']['std'] == pytest.approx(math.sqrt(14 / 3))
    assert (s['per_batch_s']['min'], s['per_batch_s']['max']) == (1.0, 6.0)
    assert s['per_sample_s']['mean'] == pytest.approx(1.5)
    assert s['per_sample_s']['std'] == pytest.approx(math.sqrt(14 / 3) / 2)
    assert s['samples_per_s'] == pytest.approx(2 / 3)
    assert summarize_times([0.5], 1)['per_batch_s']['std'] == 0.0
    with pytest.raises(ValueError, match='no timed runs'):
        summarize_times([], 1)


def test_make_synthetic_batch_layout():
    batch = make_synthetic_batch(3, (16, 24), num_tokens=20, vocab_size=30522, seed=5)
    assert len(batch['inputs']) == len(batch['data_samples']) == 3
    for img, ds in zip(batch['inputs'], batch['data_samples'], strict=True):
        assert img.shape == (3, 16, 24) and img.dtype == torch.uint8
        assert ds.gt_sem_seg.data.shape == (1, 16, 24)
        assert set(ds.gt_sem_seg.data.unique().tolist()) <= {0, 1}
        ids, mask = ds.input_ids, ds.attention_mask
        assert ids.shape == mask.shape == (20, ) and ids.dtype == mask.dtype == torch.int64
        n = int(mask.sum())
        assert mask.tolist() == [1] * n + [0] * (20 - n)
        assert ids[0] == 101 and ids[n - 1] == 102 and (ids[n:] == 0).all()
        assert ((ids[1:n - 1] >= 1000) & (ids[1:n - 1] < 30522)).all()
        assert ds.metainfo['img_shape'] == (16, 24)
    again = make_synthetic_batch(3, (16, 24), seed=5)
    assert all(torch.equal(a, b) for a, b in zip(batch['inputs'], again['inputs'], strict=True))
    with pytest.raises(ValueError, match='num_tokens'):
        make_synthetic_batch(1, (8, 8), num_tokens=2)


def test_peak_memory_sees_a_64_mib_tensor():
    with PeakMemory('cpu') as mem:
        x = torch.ones(16 * 1024 * 1024)  # 64 MiB, every page written
        del x
    assert mem.result['peak_increase_mb'] >= 60
    assert mem.result['peak_mb'] >= mem.result['start_mb'] + 60
    assert 'VmHWM' in mem.result['method'] or 'ru_maxrss' in mem.result['method']


def test_machine_info_describes_cpu():
    info = machine_info('cpu')
    assert info['cpu_model'] and info['logical_cpus'] >= 1 and info['usable_cpus'] >= 1
    assert info['torch'] == torch.__version__ and info['torch_threads'] == torch.get_num_threads()
    assert info['device'] == 'cpu' and len(info['load_average']) == 3


# ------------------------------------------------------------------------------------ measurements
@pytest.mark.parametrize('batch_size', [1, 2])
def test_measure_inference(tiny_model, batch_size):
    r = measure_inference(tiny_model, batch_size, SIZE, warmup=1, iters=3, progress=False)
    assert (r['batch_size'], r['warmup'], r['iters']) == (batch_size, 1, 3)
    assert len(r['batch_s']) == 3 and all(t > 0 for t in r['batch_s'])
    assert r['per_sample_s']['mean'] == pytest.approx(r['per_batch_s']['mean'] / batch_size)
    assert r['per_batch_s']['min'] <= r['per_batch_s']['median'] <= r['per_batch_s']['max']
    assert r['samples_per_s'] == pytest.approx(batch_size / r['per_batch_s']['mean'])
    # process CPU time of each timed run: positive, and per sample = per batch / batch
    assert len(r['cpu_batch_s']) == 3 and all(t > 0 for t in r['cpu_batch_s'])
    assert r['cpu_per_sample_s']['median'] == pytest.approx(r['cpu_per_batch_s']['median'] / batch_size)
    mem = r['memory']
    assert mem['peak_mb'] > 0 and mem['peak_increase_mb'] >= 0
    assert mem['peak_mb'] >= mem['start_mb']
    assert not tiny_model.training


def test_measure_train_step(tiny_cfg, tiny_model):
    model = copy.deepcopy(tiny_model)
    head_weight = [p for p in model.decode_head.parameters() if p.requires_grad][-1]
    before = head_weight.detach().clone()
    r = measure_train_step(model, tiny_cfg.optim_wrapper, 2, SIZE, warmup=1, iters=2, progress=False)
    assert len(r['batch_s']) == 2 and all(t > 0 for t in r['batch_s'])
    assert len(r['cpu_batch_s']) == 2 and all(t > 0 for t in r['cpu_batch_s'])
    assert r['optimizer'] == 'AdamW' and r['optim_wrapper'] == 'CPUAmpOptimWrapper'  # the tiny config's
    assert math.isfinite(r['last_loss']) and r['last_loss'] > 0
    assert not torch.equal(before, head_weight.detach())
    # AdamW keeps two fp32 moments per trainable parameter, created during the measured warm-up step
    adam_mb = 2 * 4 * count_parameters(model)['trainable'] / MIB
    assert r['memory']['peak_increase_mb'] >= 0.95 * adam_mb


def test_measure_data_pipeline(tiny_cfg, synthetic_root):
    root, train_refs = synthetic_root
    for workers in (0, 1):
        r = measure_data_pipeline(tiny_cfg, root, workers, batch_size=4, num_batches=3, progress=False)
        assert r['num_workers'] == workers and r['num_batches'] == 3
        # training gives one record per referent
        assert r['dataset_size'] == train_refs
        assert r['samples_per_s'] > 0 and r['timed_s'] > 0 and r['startup_s'] > 0
        assert r['samples_per_s'] == pytest.approx(3 * 4 / r['timed_s'])


# ------------------------------------------------------------------------------------------- CLI
def test_cli_end_to_end(tmp_path, tiny_model):
    out = tmp_path / 'bench.json'
    cmd = [sys.executable, 'tools/analysis_tools/benchmark.py', '--config', TINY, '--input-size', '64',
           '64', '--batch-size', '2', '--warmup', '1', '--iters', '2', '--threads', '1',
           '--data-images', '8', '--data-batches', '2', '--data-workers', '1', '--no-progress',
           '--out', str(out)]
    env = dict(os.environ, PYTHONWARNINGS='ignore')
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report['command'].split()[1:3] == ['tools/analysis_tools/benchmark.py', '--config']
    assert '--iters 2' in report['command']
    assert report['input_size'] == [64, 64] and report['num_tokens'] == 20
    assert report['machine']['cpu_model'] and report['machine']['torch_threads'] == 1
    # same config, same architecture: same counts as the model built here
    assert report['parameters'] == count_parameters(tiny_model)
    assert [r['batch_size'] for r in report['inference']] == [1, 2]
    for r in report['inference'] + [report['train']]:
        assert len(r['batch_s']) == 2 and r['per_sample_s']['mean'] > 0 and r['memory']['peak_mb'] > 0
    assert [d['num_workers'] for d in report['data']] == [0, 1]
    assert all(d['samples_per_s'] > 0 for d in report['data'])
    assert len(report['load_average_before']) == 3 and len(report['load_average_after']) == 3
    assert any('random BERT' in n for n in report['config_rewrites'])
    assert '| inference | 1 |' in proc.stdout and '| train step | 2 |' in proc.stdout
