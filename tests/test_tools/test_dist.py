"""Distributed training and testing on CPU: ``tools/dist_train.sh`` and
``tools/dist_test.sh`` with two gloo processes.

The checkpoint trained by two processes is evaluated twice, by
``dist_test.sh`` (two processes) and by ``tools/test.py`` (one process); the
results must be *identical*. ``RISMetric`` keeps integer I and U per sentence
and aggregates them once after gathering, so distribution can only change the
result by losing, duplicating (the sampler pads 7 sentences to 8) or mixing up
sentences, or by a different prediction. Predictions cannot differ: the test
batch size is 1 in both runs, so every sentence goes through exactly the same
single-threaded CPU computation (eval-mode BN, no batch interaction). Hence the
comparison is exact: equal per-sentence I / U, equal ``results.json`` floats,
equal printed figures and equal mask files.

The training config puts a large weight on the referent class so that 12
iterations already give masks that are neither empty nor full, which makes
the comparison meaningful.
"""
import importlib.util
import json
import os.path as osp
import re
import socket
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from mmengine.config import Config
from PIL import Image

import mmseg_ris  # noqa: F401  (allow-lists the checkpoint classes)
from mmseg_ris.datasets import generate_synthetic_refcoco
from tiny_configs import (IMG_SIZE, REPO_ROOT, finish_tool, start_tool, stop_tools,
                          write_tiny_train_config)

MAX_ITERS = 12
TIMEOUT = 300


def free_port():
    """A TCP port nobody listens on now (for torch.distributed's store)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def results(out_dir):
    """``results.json`` and the per-sentence lines keyed by (ref, sent)."""
    with open(osp.join(out_dir, 'results.json')) as f:
        summary = json.load(f)
    with open(osp.join(out_dir, 'per_sentence.jsonl')) as f:
        lines = [json.loads(line) for line in f]
    return summary, lines


@pytest.fixture(scope='module')
def dist(tmp_path_factory):
    """Train with two processes, then test with two processes and with one
    (the two tests run side by side)."""
    try:
        yield _run_all(tmp_path_factory.mktemp('dist'))
    finally:
        stop_tools()  # whatever a failure left running


def start(cmd, log_path, **env):
    return start_tool(cmd, log_path, **env)


def finish(proc, log_path):
    return finish_tool(proc, log_path, timeout=TIMEOUT)


def _run_all(root):
    data_root = str(root / 'synthetic')
    generate_synthetic_refcoco(data_root, num_images=24, seed=0)
    # Spaces in the paths check the quoting in tools/dist_*.sh.
    cfg = write_tiny_train_config(
        str(root / 'tiny lavt dist.py'), data_root, max_iters=MAX_ITERS,
        checkpoint_interval=MAX_ITERS, warmup_iters=2, lr=3e-3,
        class_weight=(0.08, 1.0), test_batch_size=1, log_interval=1)
    work_dir = root / 'train run'
    train_log = finish(
        start(['bash', 'tools/dist_train.sh', cfg, 2, '--work-dir', work_dir],
              root / 'train.log', PORT=str(free_port())), root / 'train.log')
    ckpt = work_dir / f'iter_{MAX_ITERS}.pth'

    procs = dict(
        dist=start(['bash', 'tools/dist_test.sh', cfg, ckpt, 2, '--out',
                    root / 'out_dist', '--work-dir', root / 'test dist'],
                   root / 'dist.log', PORT=str(free_port())),
        single=start([sys.executable, 'tools/test.py', cfg, ckpt, '--out',
                      root / 'out_single', '--work-dir',
                      root / 'test_single'], root / 'single.log'))
    logs = {k: finish(p, root / f'{k}.log') for k, p in procs.items()}
    return SimpleNamespace(root=root, data_root=data_root, ckpt=ckpt,
                           train_log=train_log, **logs)


def test_dist_train_uses_two_processes(dist):
    log = dist.train_log
    assert 'Distributed launcher: pytorch' in log
    assert 'Distributed training: True' in log
    assert 'GPU number: 2' in log  # mmengine's name for the world size
    assert f'Iter(train) [{MAX_ITERS}/{MAX_ITERS}]' in log
    ckpt = torch.load(dist.ckpt, map_location='cpu', weights_only=True)
    assert ckpt['meta']['iter'] == MAX_ITERS
    # Saved from the DDP-wrapped model without the 'module.' prefix.
    assert not any(k.startswith('module.') for k in ckpt['state_dict'])
    assert all(torch.isfinite(v).all() for v in ckpt['state_dict'].values()
               if v.is_floating_point())


def test_dist_test_equals_single_process_test(dist):
    assert 'Distributed training: True' in dist.dist
    summary_d, lines_d = results(dist.root / 'out_dist')
    summary_s, lines_s = results(dist.root / 'out_single')

    # Every val sentence exactly once (the padded duplicate is dropped).
    with open(osp.join(dist.data_root, 'refcoco', 'refs(unc).json')) as f:
        refs = json.load(f)
    expected = sorted((r['ref_id'], s['sent_id']) for r in refs
                      if r['split'] == 'val' for s in r['sentences'])
    assert len(expected) % 2 == 1  # uneven over two ranks
    for lines in (lines_d, lines_s):
        assert sorted((d['ref_id'], d['sent_id']) for d in lines) == expected

    def by_key(lines):
        return {(d['ref_id'], d['sent_id']): d for d in lines}

    assert by_key(lines_d) == by_key(lines_s)
    assert summary_d == summary_s

    # The masks themselves are the same.
    for d in lines_s:
        single = np.array(Image.open(dist.root / 'out_single' / d['mask']))
        dist_mask = np.array(Image.open(dist.root / 'out_dist' / d['mask']))
        assert np.array_equal(single, dist_mask), d['mask']

    # The printed metrics (rounded to 2 decimals) agree exactly as well.
    def printed(log):
        found = re.findall(r'(ris/[^:\s]+): (\S+)', log)
        assert any(k == 'ris/oIoU' for k, _ in found), log[-3000:]
        return dict(found)

    assert printed(dist.dist) == printed(dist.single)

    # Not a trivial agreement: some predictions are neither empty nor full,
    # and some referent pixels are found.
    assert sum(d['I'] for d in lines_s) > 0
    fractions = [
        (np.array(Image.open(dist.root / 'out_single' / d['mask'])) > 0).mean()
        for d in lines_s
    ]
    assert any(0 < f < 1 for f in fractions)
    assert 0 < summary_s['overall']['oIoU'] < 100
    assert all(np.array(Image.open(dist.root / 'out_single' / d['mask'])).shape
               == (IMG_SIZE, IMG_SIZE) for d in lines_s)


@pytest.mark.skipif(torch.cuda.is_available(),
                    reason='the CPU set-up only acts without CUDA')
@pytest.mark.parametrize('tool', ['train', 'test'])
def test_cpu_distributed_needs_gloo(tool):
    path = osp.join(REPO_ROOT, 'tools', f'{tool}.py')
    spec = importlib.util.spec_from_file_location(f'_tool_{tool}', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    cfg = Config(dict(env_cfg=dict(dist_cfg=dict(backend='nccl'))))
    module.init_cpu_distributed(cfg, 'none')  # one process: nothing to do
    assert 'model_wrapper_cfg' not in cfg
    with pytest.raises(ValueError, match=r"backend='nccl' needs CUDA.*gloo"):
        module.init_cpu_distributed(cfg, 'pytorch')
    assert not torch.distributed.is_initialized()
