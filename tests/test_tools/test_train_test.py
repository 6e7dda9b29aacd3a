"""End-to-end tests of ``tools/train.py`` and ``tools/test.py`` (subprocesses).

A tiny LAVT (``tests/tiny_configs.py``) trains for 12 iterations on a
24-image synthetic RefCOCO set, with a checkpoint every 3 iterations. Two runs
start together: the uninterrupted reference, and a run that is SIGKILLed as
soon as its first checkpoint is complete. Then ``tools/test.py`` evaluates the
reference's final checkpoint, the killed run is resumed with ``--resume`` and
a third run resumes from the reference's ``iter_6.pth`` with
``--resume PATH`` (all three side by side; see the ``runs`` fixture).

Resuming is checked against the reference run:

* the resumed run logs ``resumed ... iter: K`` and then exactly iterations
  K+1..12, each with the reference run's learning rate;
* its final weights are *equal* (``torch.equal``) to the reference run's.
  Exact equality is attainable and is what resuming promises: the tiny model
  has no dropout or drop-path (no RNG in the forward pass), the data order is
  fixed (``InfiniteSampler(seed=0)`` indices, and mmengine replays the first K
  batches on resume so that NumPy's global RNG, which picks each referent's
  sentence, reaches iteration K+1 in the same state), checkpoints hold the
  exact weights, AdamW moments and scheduler state, and every process runs
  the same CPU kernels with one thread (``tool_env``). A difference of even
  one ulp would therefore reveal lost state.
"""
import glob
import json
import os.path as osp
import re
import signal
import sys
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

import mmseg_ris  # noqa: F401  (allow-lists the checkpoint classes)
from mmseg_ris.datasets import generate_synthetic_refcoco
from tiny_configs import (IMG_SIZE, REPO_ROOT, finish_tool, start_tool, stop_tools,
                          write_tiny_train_config)

MAX_ITERS = 12
INTERVAL = 3
PATH_RESUME_ITER = 2 * INTERVAL
TRAIN = osp.join(REPO_ROOT, 'tools', 'train.py')
TEST = osp.join(REPO_ROOT, 'tools', 'test.py')
TIMEOUT = 300
# mmengine: "Iter(train) [ 4/12]  base_lr: 2.7013e-03 lr: 2.7013e-03  ..."
ITER_LINE = re.compile(r'Iter\(train\) \[\s*(\d+)/(\d+)\].*?\slr: (\S+)')


def start(args, log_path):
    """Start ``python ARGS`` (this interpreter) in the repository."""
    return start_tool([sys.executable, *args], log_path)


def finish(proc, log_path):
    return finish_tool(proc, log_path, timeout=TIMEOUT)


def logged_lrs(log):
    """``{iteration: lr string}`` of every training log line."""
    found = {}
    for it, total, lr in ITER_LINE.findall(log):
        assert int(total) == MAX_ITERS
        found[int(it)] = lr
    return found


def weights(path):
    return torch.load(path, map_location='cpu', weights_only=True)['state_dict']


def assert_same_weights(path, reference):
    got, want = weights(path), weights(reference)
    assert got.keys() == want.keys()
    different = [k for k in want if not torch.equal(got[k], want[k])]
    assert not different, f'{len(different)} tensors differ, e.g. {different[:5]}'


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp('train_test')
    data_root = str(root / 'synthetic')
    generate_synthetic_refcoco(data_root, num_images=24, seed=0)
    cfg = write_tiny_train_config(
        str(root / 'tiny_lavt.py'), data_root, max_iters=MAX_ITERS,
        checkpoint_interval=INTERVAL, log_interval=1)
    return SimpleNamespace(root=root, data_root=data_root, cfg=cfg)


@pytest.fixture(scope='module')
def runs(setup):
    """Every tool run of this module, in two rounds of concurrent processes.

    Round 1: the reference run and a run that is killed as soon as
    ``last_checkpoint`` names a checkpoint (mmengine writes that file only
    after the checkpoint itself is complete). Round 2, once the reference is
    done: ``tools/test.py`` on its final checkpoint, ``--resume`` (auto) in
    the killed run's work dir, and ``--resume PATH`` from the reference's
    ``iter_6.pth`` into a new work dir. Each process has one thread, so
    running them side by side uses the cores without slowing each other.
    """
    try:
        yield _run_all(setup)
    finally:
        stop_tools()  # whatever a failure left running


def _run_all(setup):
    root = setup.root
    ref_dir, killed_dir = root / 'reference', root / 'killed'
    ref = start([TRAIN, setup.cfg, '--work-dir', ref_dir], root / 'ref.log')
    victim = start([TRAIN, setup.cfg, '--work-dir', killed_dir],
                   root / 'killed.log')
    last = killed_dir / 'last_checkpoint'
    deadline = time.monotonic() + TIMEOUT
    while not (last.exists() and last.read_text().strip()):
        assert victim.poll() is None, (
            'the run to interrupt ended before its first checkpoint:\n'
            + (root / 'killed.log').read_text()[-4000:])
        assert time.monotonic() < deadline, 'no checkpoint in time'
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=TIMEOUT)
    killed_ckpt = last.read_text().strip()
    ref_log = finish(ref, root / 'ref.log')

    jobs = dict(
        test=[TEST, setup.cfg, ref_dir / f'iter_{MAX_ITERS}.pth', '--out',
              root / 'test_out', '--work-dir', root / 'test_work'],
        auto_resume=[TRAIN, setup.cfg, '--work-dir', killed_dir, '--resume'],
        path_resume=[TRAIN, setup.cfg, '--work-dir', root / 'path_resume',
                     '--resume', ref_dir / f'iter_{PATH_RESUME_ITER}.pth'])
    procs = {name: start(args, root / f'{name}.log')
             for name, args in jobs.items()}
    logs = {name: finish(proc, root / f'{name}.log')
            for name, proc in procs.items()}
    return SimpleNamespace(
        ref_dir=ref_dir, ref_log=ref_log, killed_dir=killed_dir,
        killed_rc=victim.returncode, killed_ckpt=killed_ckpt,
        test_out=root / 'test_out', test_work=root / 'test_work',
        path_resume_dir=root / 'path_resume', **logs)


def test_train_logs_every_iteration_and_saves_checkpoints(runs):
    lrs = logged_lrs(runs.ref_log)
    assert sorted(lrs) == list(range(1, MAX_ITERS + 1))
    # Linear warm-up over 3 iterations, then poly decay (from iteration 4 at
    # the peak rate): after the warm-up every rate is distinct, so comparing
    # rates pins down the scheduler's position.
    rates = [float(lrs[i]) for i in range(1, MAX_ITERS + 1)]
    assert rates[0] < rates[1] < rates[2] == rates[3]
    assert all(a > b for a, b in zip(rates[3:], rates[4:]))
    for it in range(INTERVAL, MAX_ITERS + 1, INTERVAL):
        assert (runs.ref_dir / f'iter_{it}.pth').is_file()
    last = (runs.ref_dir / 'last_checkpoint').read_text().strip()
    assert last == str(runs.ref_dir / f'iter_{MAX_ITERS}.pth')
    losses = [float(x) for x in re.findall(r'decode\.loss_ce: (\S+)',
                                           runs.ref_log)]
    assert len(losses) == MAX_ITERS and all(np.isfinite(losses))


def test_checkpoint_loads_with_weights_only(runs):
    ckpt = torch.load(runs.ref_dir / f'iter_{MAX_ITERS}.pth',
                      map_location='cpu', weights_only=True)
    assert {'meta', 'state_dict', 'optimizer', 'param_schedulers',
            'message_hub'} <= set(ckpt)
    assert ckpt['meta']['iter'] == MAX_ITERS
    assert any(k.startswith('backbone.text_encoder.bert.')
               for k in ckpt['state_dict'])
    assert any(k.startswith('decode_head.') for k in ckpt['state_dict'])


def test_no_unsafe_checkpoint_loading_in_code():
    files = (glob.glob(osp.join(REPO_ROOT, 'tools', '**', '*.py'),
                       recursive=True) +
             glob.glob(osp.join(REPO_ROOT, 'mmseg_ris', '**', '*.py'),
                       recursive=True))
    assert len(files) > 20
    unsafe = re.compile(r'weights_only\s*=\s*False')
    offenders = [f for f in files if unsafe.search(open(f).read())]
    assert offenders == []


def test_test_tool_scores_every_sentence(setup, runs):
    out_dir, log = runs.test_out, runs.test
    assert 'Load checkpoint from' in log

    # The expected sentences, read from the refs file itself.
    with open(osp.join(setup.data_root, 'refcoco', 'refs(unc).json')) as f:
        refs = json.load(f)
    expected = sorted((r['ref_id'], s['sent_id']) for r in refs
                      if r['split'] == 'val' for s in r['sentences'])
    assert len(expected) >= 3

    with open(out_dir / 'per_sentence.jsonl') as f:
        lines = [json.loads(line) for line in f]
    assert sorted((d['ref_id'], d['sent_id']) for d in lines) == expected
    for d in lines:
        assert 0 <= d['I'] <= d['U'] <= IMG_SIZE * IMG_SIZE
        assert d['U'] > 0  # every synthetic referent has pixels
        assert d['IoU'] == d['I'] / d['U']
        mask = np.array(Image.open(out_dir / d['mask']))
        assert mask.shape == (IMG_SIZE, IMG_SIZE)
        assert set(np.unique(mask).tolist()) <= {0, 255}
        assert (mask == 255).sum() <= d['U']

    with open(out_dir / 'results.json') as f:
        overall = json.load(f)['overall']
    sum_i = sum(d['I'] for d in lines)
    sum_u = sum(d['U'] for d in lines)
    assert overall['num_sentences'] == len(expected)
    assert overall['oIoU'] == pytest.approx(100.0 * sum_i / sum_u, abs=1e-9)
    assert overall['mIoU'] == pytest.approx(
        100.0 * np.mean([d['I'] / d['U'] for d in lines]), abs=1e-9)

    # The printed figure is the rounded one (2 decimals, printed with 4).
    printed = re.findall(r'ris/oIoU: (\S+)', log)
    assert printed, log[-3000:]
    assert float(printed[-1]) == pytest.approx(round(overall['oIoU'], 2),
                                               abs=1e-9)
    # ... and the same figure is recorded in the work dir's JSON log.
    json_logs = glob.glob(str(runs.test_work / '*' / '*.json'))
    assert len(json_logs) == 1
    with open(json_logs[0]) as f:
        recorded = [json.loads(line) for line in f if line.strip()]
    assert recorded[-1]['ris/oIoU'] == pytest.approx(round(overall['oIoU'], 2))


def check_resumed(log, k, reference_log):
    """The resumed run restarts at iteration k+1 with the reference's rates."""
    assert f'resumed epoch: 0, iter: {k}' in log, log[-3000:]
    assert f'Advance dataloader {k} steps' in log
    lrs = logged_lrs(log)
    assert sorted(lrs) == list(range(k + 1, MAX_ITERS + 1))
    reference = logged_lrs(reference_log)
    assert {i: reference[i] for i in lrs} == lrs
    return lrs


def test_resume_after_kill(runs):
    assert runs.killed_rc == -signal.SIGKILL
    match = re.fullmatch(r'.*iter_(\d+)\.pth', runs.killed_ckpt)
    k = int(match.group(1))
    # Killed mid-run, at a checkpoint boundary.
    assert 0 < k < MAX_ITERS and k % INTERVAL == 0

    log = runs.auto_resume
    assert re.search(r'Auto resumed from the latest checkpoint \S*'
                     rf'iter_{k}\.pth', log), log[-3000:]
    lrs = check_resumed(log, k, runs.ref_log)
    # The first iteration after resuming trains at the reference's rate.
    assert lrs[k + 1] == logged_lrs(runs.ref_log)[k + 1]
    assert_same_weights(runs.killed_dir / f'iter_{MAX_ITERS}.pth',
                        runs.ref_dir / f'iter_{MAX_ITERS}.pth')


def test_resume_from_given_checkpoint(runs):
    k, work_dir, log = PATH_RESUME_ITER, runs.path_resume_dir, runs.path_resume
    assert f'Load checkpoint from {runs.ref_dir / f"iter_{k}.pth"}' in log
    check_resumed(log, k, runs.ref_log)
    # Only the remaining checkpoints are written in the new work dir.
    assert sorted(osp.basename(p) for p in glob.glob(str(work_dir / '*.pth'))) \
        == sorted(f'iter_{i}.pth' for i in range(k + INTERVAL, MAX_ITERS + 1,
                                                 INTERVAL))
    assert_same_weights(work_dir / f'iter_{MAX_ITERS}.pth',
                        runs.ref_dir / f'iter_{MAX_ITERS}.pth')
