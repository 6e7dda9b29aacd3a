"""MagNet component ablation: baseline / +MG / +CAM / +CAL / full, several seeds each, mean ± std oIoU.

Every (variant, seed) run is an ordinary ``tools/train.py`` run of a generated variant config (see
:mod:`mmseg_ris.utils.ablation`) followed by ``tools/test.py --out`` on the val split; the oIoU of the
chosen expression group (default: relational) and overall are collected into ``ablation.json`` and a
Markdown table ``ablation.md``. Finished runs are kept, so an interrupted ablation resumes where it
stopped.

Examples::

    # the CPU-scale study of configs/magnet/README.md (synthetic set, tiny MagNet)
    python tools/analysis_tools/magnet_ablation.py --iters 200 --batch-size 8 --seeds 0 1 2 --jobs 2
    # a longer one on a GPU machine
    python tools/analysis_tools/magnet_ablation.py --iters 3000 --batch-size 16 --seeds 0 1 2 --threads 0
"""
import argparse
import json
import os
import os.path as osp
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, REPO_ROOT)

from mmseg_ris.utils.ablation import (ABLATION_VARIANTS, markdown_table, summarize,  # noqa: E402
                                      variant_slug, write_variant_config)

DEFAULT_CONFIG = 'configs/magnet/magnet_tiny_synthetic.py'


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='MagNet component ablation (several seeds per variant)')
    parser.add_argument('--config', default=DEFAULT_CONFIG, help='MagNet config the variants inherit')
    parser.add_argument('--data-root', default='data/synthetic', help='dataset root of train/val/test')
    parser.add_argument('--variants', nargs='+', default=list(ABLATION_VARIANTS),
                        choices=list(ABLATION_VARIANTS), help='variants to run')
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    parser.add_argument('--iters', type=int, default=200, help='training iterations per run')
    parser.add_argument('--warmup', type=int, default=None,
                        help='linear warm-up iterations (default: a tenth of --iters, at most 100)')
    parser.add_argument('--batch-size', type=int, default=None, help='training batch (default: the config\'s)')
    parser.add_argument('--group', default='relational', help='expression group reported next to overall')
    parser.add_argument('--work-dir', default='work_dirs/magnet_ablation')
    parser.add_argument('--jobs', type=int, default=1, help='runs at the same time')
    parser.add_argument('--threads', type=int, default=1,
                        help='OMP_NUM_THREADS of each run (0: leave unset)')
    parser.add_argument('--cfg-options', nargs='+', default=[],
                        help='extra key=value overrides for every run (as tools/train.py takes them)')
    return parser.parse_args(argv)


def _common_options(args) -> list:
    root = args.data_root.rstrip('/') + '/'
    opts = [f'{d}.dataset.data_root={root}' for d in ('train_dataloader', 'val_dataloader', 'test_dataloader')]
    warmup = args.warmup if args.warmup is not None else max(1, min(100, args.iters // 10))
    if not 0 < warmup < args.iters:
        raise ValueError(f'--warmup must be in (0, --iters={args.iters}), got {warmup}')
    opts += [f'train_cfg.max_iters={args.iters}', f'train_cfg.val_interval={args.iters}',
             f'param_scheduler.0.end={warmup}', f'param_scheduler.1.begin={warmup}',
             f'param_scheduler.1.end={args.iters}', f'default_hooks.checkpoint.interval={args.iters}',
             # only the last checkpoint is needed; no renders during an ablation
             'default_hooks.visualization.draw=False']
    if args.batch_size:
        opts.append(f'train_dataloader.batch_size={args.batch_size}')
    return opts + list(args.cfg_options)


def _run(cmd, log_path, env):
    with open(log_path, 'w') as log:
        proc = subprocess.run(cmd, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f'command failed ({proc.returncode}), see {log_path}: {" ".join(cmd)}')


def run_one(args, variant: str, seed: int, config: str) -> dict:
    """Train and evaluate one (variant, seed); return its metrics (cached in ``run.json``)."""
    run_dir = osp.join(args.work_dir, f'{variant_slug(variant)}_seed{seed}')
    done = osp.join(run_dir, 'run.json')
    if osp.exists(done):
        with open(done) as f:
            return json.load(f)
    os.makedirs(run_dir, exist_ok=True)
    env = dict(os.environ)
    if args.threads:
        env['OMP_NUM_THREADS'] = str(args.threads)
    opts = _common_options(args) + [f'randomness.seed={seed}']
    start = time.time()
    _run([sys.executable, 'tools/train.py', config, '--work-dir', run_dir, '--cfg-options', *opts],
         osp.join(run_dir, 'train_stdout.log'), env)
    train_s = time.time() - start
    ckpt = osp.join(run_dir, f'iter_{args.iters}.pth')
    out = osp.join(run_dir, 'eval')
    _run([sys.executable, 'tools/test.py', config, ckpt, '--work-dir', out, '--out', out,
          '--cfg-options', *opts], osp.join(run_dir, 'test_stdout.log'), env)
    with open(osp.join(out, 'results.json')) as f:
        res = json.load(f)
    if args.group not in res['groups']:
        raise KeyError(f'expression group {args.group!r} not in the results; have {list(res["groups"])}')
    run = dict(variant=variant, seed=seed, iters=args.iters, train_seconds=round(train_s, 1),
               oIoU=res['overall']['oIoU'], mIoU=res['overall']['mIoU'],
               **{f'{args.group} oIoU': res['groups'][args.group]['oIoU']})
    with open(done, 'w') as f:
        json.dump(run, f, indent=1)
    print(f'[ablation] {variant} seed {seed}: {args.group} oIoU {run[f"{args.group} oIoU"]:.2f}, '
          f'oIoU {run["oIoU"]:.2f} ({train_s:.0f} s training)', flush=True)
    return run


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(args.work_dir, exist_ok=True)
    configs = {v: write_variant_config(osp.join(REPO_ROOT, args.config), v, osp.join(args.work_dir, 'configs'))
               for v in args.variants}
    # seeds outermost, so a partial ablation already has every variant at the first seeds
    todo = [(v, s) for s in args.seeds for v in args.variants]
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        runs = list(pool.map(lambda vs: run_one(args, vs[0], vs[1], configs[vs[0]]), todo))
    metrics = [f'{args.group} oIoU', 'oIoU', 'mIoU']
    summary = summarize(runs, metrics)
    table = markdown_table(summary, metrics)
    report = dict(command=' '.join([osp.basename(sys.argv[0])] + (argv if argv is not None else sys.argv[1:])),
                  config=args.config, iters=args.iters, batch_size=args.batch_size, seeds=args.seeds,
                  runs=runs, summary=summary)
    with open(osp.join(args.work_dir, 'ablation.json'), 'w') as f:
        json.dump(report, f, indent=1)
    with open(osp.join(args.work_dir, 'ablation.md'), 'w') as f:
        f.write(table)
    print(table)
    return report


if __name__ == '__main__':
    main()
