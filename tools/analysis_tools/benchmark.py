"""Speed, memory, parameter and data-rate benchmark of a referring segmentor, with random weights.

Measures on the current device (CUDA when available, else the CPU):

* inference latency per sample (``model.test_step``) at batch 1 and ``--batch-size``,
* training step time per sample (``model.train_step``: forward, backward, the config's optimizer step
  through mmengine's ``OptimWrapper``) at ``--batch-size``,
* peak memory of each of these phases,
* samples/s through the config's training dataset + pipeline + dataloader, without and with workers
  (on the synthetic RefCOCO-format set, generated into a temporary folder unless ``--data-root``),
* total and trainable parameter counts.

The config is rewritten so that nothing is downloaded or read from ``pretrained/``: BERT is built at
random from its architecture, ``Pretrained`` init configs are dropped, SyncBN becomes BN (see
:func:`mmseg_ris.utils.benchmark.prepare_benchmark_config`). Figures go to stdout as a table and to a
JSON file with the machine description and the command line. See docs/benchmarks.md.

Examples::

    # full-size LAVT (Swin-B + BERT-base, 480x480)
    python tools/analysis_tools/benchmark.py --batch-size 2 --warmup 1 --iters 3 --threads 2
    # the tiny synthetic config at 64x64
    python tools/analysis_tools/benchmark.py --config configs/lavt/lavt_tiny_synthetic.py \\
        --input-size 64 64 --iters 5 --out work_dirs/bench_tiny.json
"""
import argparse
import datetime
import json
import os
import os.path as osp
import shlex
import sys
import tempfile
import time

import torch
from mmengine.config import Config, DictAction

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DEFAULT_CONFIG = 'configs/lavt/lavt_swin-b_bert-base_4xb8-40e_refcoco-480x480.py'


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Benchmark a referring segmentor with random weights (latency, train step, memory, '
        'data pipeline, parameters)')
    parser.add_argument('--config', default=None,
                        help=f'config file (default: {DEFAULT_CONFIG}, the full-size LAVT)')
    parser.add_argument('--batch-size', type=int, default=2,
                        help='batch of the second inference measurement and of the train step')
    parser.add_argument('--warmup', type=int, default=2, help='untimed runs before each measurement')
    parser.add_argument('--iters', type=int, default=10, help='timed runs of each measurement')
    parser.add_argument('--threads', type=int, default=None,
                        help='torch.set_num_threads (default: torch\'s choice)')
    parser.add_argument('--device', default=None,
                        help='cpu, cuda or cuda:N (default: cuda when available, else cpu)')
    parser.add_argument('--input-size', type=int, nargs=2, metavar=('H', 'W'), default=None,
                        help='network input size (default: the config\'s data_preprocessor.size)')
    parser.add_argument('--num-tokens', type=int, default=20, help='token sequence length')
    parser.add_argument('--skip-train', action='store_true', help='no training step measurement')
    parser.add_argument('--skip-data', action='store_true', help='no data pipeline measurement')
    parser.add_argument('--data-root', default=None,
                        help='RefCOCO-format data for the pipeline measurement (default: a synthetic '
                        'set generated into a temporary folder)')
    parser.add_argument('--data-images', type=int, default=40,
                        help='images of the generated synthetic set')
    parser.add_argument('--data-batches', type=int, default=20,
                        help='timed batches of each data pipeline measurement')
    parser.add_argument('--data-batch-size', type=int, default=None,
                        help='dataloader batch size (default: the config\'s train batch size)')
    parser.add_argument('--data-workers', type=int, default=None,
                        help='workers of the second data measurement (default: the config\'s)')
    parser.add_argument('--seed', type=int, default=0, help='seed of the synthetic batches and data')
    parser.add_argument('--out', default=None,
                        help='JSON report (default: work_dirs/benchmark/<config>_<device>.json)')
    parser.add_argument('--no-progress', action='store_true', help='no progress bars')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, e.g. model.decode_head.channels=256')
    args = parser.parse_args(argv)
    for name in ('batch_size', 'iters', 'num_tokens', 'data_images', 'data_batches'):
        if getattr(args, name) < 1:
            parser.error(f'--{name.replace("_", "-")} must be >= 1, got {getattr(args, name)}')
    if args.warmup < 0:
        parser.error(f'--warmup must be >= 0, got {args.warmup}')
    if args.threads is not None and args.threads < 1:
        parser.error(f'--threads must be >= 1, got {args.threads}')
    if args.data_workers is not None and args.data_workers < 0:
        parser.error(f'--data-workers must be >= 0, got {args.data_workers}')
    return args


def _ms(x: float) -> str:
    return f'{x * 1000:.1f}'


def _mb(mem: dict) -> str:
    return f'{mem["peak_increase_mb"]:.0f}' if mem else '-'


def format_report(report: dict) -> str:
    """The human-readable summary (Markdown tables) of a benchmark report."""
    m = report['machine']
    p = report['parameters']
    lines = [
        f'config: {report["config"]}',
        f'device: {m["device"]}' + (f' ({m["gpu"]})' if 'gpu' in m else '') +
        f'; CPU: {m["cpu_model"]}, {m["usable_cpus"]} usable cores; torch {m["torch"]}, '
        f'{m["torch_threads"]} threads',
        f'input: {report["input_size"][0]}x{report["input_size"][1]}, {report["num_tokens"]} tokens; '
        f'load average before {report["load_average_before"]}, after {report["load_average_after"]}',
        f'parameters: {p["total"] / 1e6:.2f} M total, {p["trainable"] / 1e6:.2f} M trainable, '
        f'{p["frozen"] / 1e6:.2f} M frozen; model built in {report["model_build_s"]:.1f} s',
        '',
        '| measurement | batch | warm-up + timed | per sample mean (ms) | median (ms) | std (ms) '
        '| CPU per sample median (ms) | samples/s | peak mem increase (MiB) |',
        '|---|---:|---:|---:|---:|---:|---:|---:|---:|',
    ]
    rows = [('inference', r) for r in report['inference']]
    if report.get('train'):
        rows.append(('train step', report['train']))
    for name, r in rows:
        s = r['per_sample_s']
        lines.append(f'| {name} | {r["batch_size"]} | {r["warmup"]} + {r["iters"]} | {_ms(s["mean"])} '
                     f'| {_ms(s["median"])} | {_ms(s["std"])} | {_ms(r["cpu_per_sample_s"]["median"])} '
                     f'| {r["samples_per_s"]:.3f} | {_mb(r["memory"])} |')
    mem_method = (report['inference'][0]['memory'] or {}).get('method')
    if mem_method:
        lines.append(f'\npeak memory: {mem_method}')
    if report.get('train'):
        t = report['train']
        lines.append(f'train step: {t["optim_wrapper"]}({t["optimizer"]}), last loss {t["last_loss"]:.4f}')
    if report.get('data'):
        d0 = report['data'][0]
        lines += [
            '',
            f'data pipeline: {report["data_root"]} ({d0["dataset_size"]} training records)',
            '',
            '| workers | batch | timed batches | start-up (s) | samples/s | batch median (ms) |',
            '|---:|---:|---:|---:|---:|---:|',
        ]
        for d in report['data']:
            lines.append(f'| {d["num_workers"]} | {d["batch_size"]} | {d["num_batches"]} '
                         f'| {d["startup_s"]:.2f} | {d["samples_per_s"]:.1f} '
                         f'| {_ms(d["batch_s"]["median"])} |')
    if report['config_rewrites']:
        lines += ['', 'config rewrites (random init, single process):']
        lines += [f'  - {n}' for n in report['config_rewrites']]
    return '\n'.join(lines)


def main(argv=None):
    args = parse_args(argv)
    t_start = time.perf_counter()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ('cuda' if torch.cuda.is_available() else 'cpu'))
    if device.type == 'cuda':
        if not torch.cuda.is_available():
            raise SystemExit(f'--device {args.device}: CUDA is not available on this machine')
        if device.index is not None:
            torch.cuda.set_device(device)

    from mmengine.registry import init_default_scope

    import mmseg_ris  # noqa: F401  (registers datasets, transforms, models)
    from mmseg_ris.utils.benchmark import (build_benchmark_model, count_parameters, input_size_of,
                                           machine_info, measure_data_pipeline, measure_inference,
                                           measure_train_step, prepare_benchmark_config,
                                           set_input_size, to_jsonable)

    config = args.config or osp.join(REPO_ROOT, DEFAULT_CONFIG)
    if not osp.isfile(config):
        raise SystemExit(f'--config {config}: no such file')
    cfg = Config.fromfile(config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    if args.input_size is not None:
        set_input_size(cfg, args.input_size)
    input_size = input_size_of(cfg)
    rewrites = prepare_benchmark_config(cfg)
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    progress = not args.no_progress

    report = dict(
        command=shlex.join(['python'] + [osp.relpath(osp.abspath(sys.argv[0]), os.getcwd())] +
                           sys.argv[1:]) if argv is None else shlex.join(['benchmark.main'] + list(argv)),
        cwd=os.getcwd(),
        config=osp.relpath(osp.abspath(config), os.getcwd()),
        date=datetime.datetime.now().astimezone().isoformat(timespec='seconds'),
        machine=machine_info(device),
        input_size=list(input_size),
        num_tokens=args.num_tokens,
        seed=args.seed,
        config_rewrites=rewrites)
    report['load_average_before'] = report['machine']['load_average']

    t0 = time.perf_counter()
    model = build_benchmark_model(cfg, device)
    report['model_build_s'] = time.perf_counter() - t0
    report['parameters'] = count_parameters(model)
    print(f'built {type(model).__name__}: {report["parameters"]["total"] / 1e6:.2f} M parameters in '
          f'{report["model_build_s"]:.1f} s', flush=True)

    report['inference'] = []
    for bs in sorted({1, args.batch_size}):
        report['inference'].append(
            measure_inference(model, bs, input_size, args.warmup, args.iters, args.num_tokens, args.seed,
                              progress))
    report['train'] = None
    if not args.skip_train:
        report['train'] = measure_train_step(model, cfg.get('optim_wrapper'), args.batch_size, input_size,
                                             args.warmup, args.iters, args.num_tokens, args.seed, progress)
    del model
    if device.type == 'cuda':
        torch.cuda.empty_cache()

    report['data'] = None
    report['data_root'] = None
    if not args.skip_data:
        loader_cfg = cfg.get('train_dataloader')
        if loader_cfg is None:
            raise SystemExit(f'{config}: no train_dataloader for the data measurement (use --skip-data)')
        data_bs = args.data_batch_size or loader_cfg.get('batch_size', 1)
        workers = args.data_workers if args.data_workers is not None else loader_cfg.get('num_workers', 0)
        with tempfile.TemporaryDirectory(prefix='ris_bench_') as tmp:
            data_root = args.data_root
            if data_root is None:
                from mmseg_ris.datasets import generate_synthetic_refcoco
                data_root = osp.join(tmp, 'synthetic')
                generate_synthetic_refcoco(data_root, args.data_images, seed=args.seed, progress=progress)
                report['data_root'] = (f'synthetic RefCOCO-format set, {args.data_images} images, '
                                       f'seed {args.seed} (temporary folder)')
            else:
                report['data_root'] = data_root
            report['data'] = [
                measure_data_pipeline(cfg, data_root, w, data_bs, args.data_batches, 1, args.seed, progress)
                for w in sorted({0, workers})
            ]

    report['load_average_after'] = list(os.getloadavg()) if hasattr(os, 'getloadavg') else None
    report['wall_s'] = time.perf_counter() - t_start
    out = args.out or osp.join('work_dirs', 'benchmark',
                               f'{osp.splitext(osp.basename(config))[0]}_{device.type}.json')
    if osp.dirname(out):
        os.makedirs(osp.dirname(out), exist_ok=True)
    with open(out, 'w') as f:
        json.dump(to_jsonable(report), f, indent=2)
    print()
    print(format_report(report))
    print(f'\nwall time {report["wall_s"]:.1f} s; report written to {out}')
    return report


if __name__ == '__main__':
    main()
