"""Plot training curves (losses, learning rate) and validation metrics from MMEngine's scalar logs.

Reads ``{work_dir}/{timestamp}/vis_data/scalars.json`` (every run of a work dir, merged, so a resumed
training is one curve) or a given JSON file, and draws one panel per key with Matplotlib's Agg canvas
(no display needed). Several runs given together are overlaid. A short summary (first, last, minimum,
maximum and where) is printed per key. See docs/analysis_tools.md.

Examples::

    python tools/analysis_tools/analyze_logs.py work_dirs/lavt_tiny_synthetic \\
        --keys loss decode.loss_ce --val-keys ris/oIoU --out curves.png
    python tools/analysis_tools/analyze_logs.py RUN_A RUN_B --legend baseline ours --keys loss lr \\
        --out compare.png
    python tools/analysis_tools/analyze_logs.py work_dirs/lavt_tiny_synthetic --list-keys
"""
import argparse
import os
import os.path as osp
import sys

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Plot curves from MMEngine scalar logs')
    parser.add_argument('logs', nargs='+',
                        help='work dir(s) of training runs, or scalars.json file(s)')
    parser.add_argument('--keys', nargs='*', default=['loss'],
                        help='training keys to plot (x = iteration), e.g. loss decode.loss_ce lr')
    parser.add_argument('--val-keys', nargs='*', default=[],
                        help='validation keys to plot (x = validation step), e.g. ris/oIoU ris/mIoU')
    parser.add_argument('--legend', nargs='+', default=None,
                        help='one label per log (default: the paths)')
    parser.add_argument('--title', default=None, help='figure title')
    parser.add_argument('--out', default='curves.png', help='output image (default: curves.png)')
    parser.add_argument('--dpi', type=int, default=100, help='image resolution')
    parser.add_argument('--list-keys', action='store_true',
                        help='print the keys found in each log and exit')
    args = parser.parse_args(argv)
    if args.legend is not None and len(args.legend) != len(args.logs):
        parser.error(f'--legend needs one label per log: {len(args.logs)} logs, '
                     f'{len(args.legend)} labels')
    if not args.list_keys and not args.keys and not args.val_keys:
        parser.error('nothing to plot: give --keys and/or --val-keys')
    if args.dpi <= 0:
        parser.error(f'--dpi must be positive, got {args.dpi}')
    return args


def main(argv=None):
    args = parse_args(argv)
    if REPO_ROOT not in sys.path:
        sys.path.insert(0, REPO_ROOT)
    from mmseg_ris.utils.log_curves import load_scalar_log, plot_curves

    labels = args.legend or args.logs
    try:
        logs = {label: load_scalar_log(path) for label, path in zip(labels, args.logs)}
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f'analyze_logs.py: {e}') from None
    for label, log in logs.items():
        print(f'{label}: {len(log.train)} training lines, {len(log.val)} validation lines from '
              f'{", ".join(log.files)}')
    if args.list_keys:
        for label, log in logs.items():
            print(f'{label}\n  training keys: {", ".join(log.keys("train")) or "none"}'
                  f'\n  validation keys: {", ".join(log.keys("val")) or "none"}')
        return None
    os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
    try:
        summary = plot_curves(logs, args.out, args.keys, args.val_keys, args.title, args.dpi)
    except KeyError as e:
        raise SystemExit(f'analyze_logs.py: {e.args[0]}') from None
    for panel, runs in summary.items():
        mode, key = panel.split(':', 1)
        for label, s in runs.items():
            where = f' [{label}]' if len(runs) > 1 else ''
            line = f'{mode:5s} {key}{where}: {s["points"]} points, first {s["first"]:.6g}, ' \
                   f'last {s["last"]:.6g}'
            if 'min' in s:
                line += f', min {s["min"]:.6g} @ {s["min_step"]}, max {s["max"]:.6g} @ {s["max_step"]}'
            print(line)
    print(f'curves written to {args.out}')
    return summary


if __name__ == '__main__':
    main()
