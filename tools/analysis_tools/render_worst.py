"""Render the N worst-predicted sentences of a test run (image, ground truth, prediction, expression, IoU).

First evaluate with the predictions kept::

    python tools/test.py CONFIG CHECKPOINT --out DIR

``DIR`` then holds ``results.json``, ``per_sentence.jsonl`` and one prediction PNG per sentence. This tool
ranks the sentences by IoU (lowest first; sentences whose ground truth and prediction are both empty, and
R-RefCOCO negatives, are not ranked; see :mod:`mmseg_ris.visualization.worst`), reads the image, ground
truth and expression of each from the config's test dataset, and writes
``OUT_DIR/{rank:03d}_iou{IoU:.2f}_{ref_id}_{sent_id}.png`` plus ``OUT_DIR/worst.jsonl``.

Examples::

    python tools/analysis_tools/render_worst.py CONFIG DIR --num 20
    python tools/analysis_tools/render_worst.py CONFIG DIR --num 10 --group relational \\
        --out-dir DIR/worst_relational
"""
import argparse
import os.path as osp
import sys

from mmengine.config import Config, DictAction

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Render the lowest-IoU sentences of a tools/test.py --out folder')
    parser.add_argument('config', help='the config of the test run')
    parser.add_argument('result_dir', help='the --out folder of tools/test.py')
    parser.add_argument('--num', type=int, default=20, help='how many sentences to render')
    parser.add_argument('--out-dir', default=None, help='output folder (default: RESULT_DIR/worst)')
    parser.add_argument('--group', default=None,
                        help='only sentences of this group (RISMetric group_by, the expression type '
                        'by default: attribute, relational, ...)')
    parser.add_argument('--no-progress', action='store_true', help='no progress bar')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='the overrides of the test run, e.g. test_dataloader.dataset.split=testA')
    args = parser.parse_args(argv)
    if args.num < 1:
        parser.error(f'--num must be >= 1, got {args.num}')
    return args


def main(argv=None):
    args = parse_args(argv)
    if REPO_ROOT not in sys.path:
        sys.path.insert(0, REPO_ROOT)
    from mmseg_ris.visualization.worst import render_worst

    if not osp.isfile(args.config):
        raise SystemExit(f'render_worst.py: config file {args.config!r} does not exist')
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    try:
        result = render_worst(cfg, args.result_dir, args.out_dir, args.num, args.group,
                              progress=not args.no_progress)
    except (FileNotFoundError, KeyError, ValueError) as e:
        raise SystemExit(f'render_worst.py: {e.args[0] if e.args else e}') from None
    print(f'{result["sentences"]} sentences: {result["negatives"]} negative (exist=False, not scored), '
          f'{result["not_in_group"]} outside group {result["group"]!r}, {result["empty_union"]} with '
          f'empty ground truth and prediction (U=0, correct), {result["ranked"]} ranked by IoU')
    for e in result['rendered']:
        print(f'  {e["rank"]:3d}  IoU {e["IoU"]:.4f}  ref {e["ref_id"]} sent {e["sent_id"]}'
              f'{"  " + str(e["group"]) if e["group"] is not None else ""}  "{e["text"]}"')
    print(f'{len(result["rendered"])} renders and {osp.basename(result["index"])} written to '
          f'{result["out_dir"]}')
    return result


if __name__ == '__main__':
    main()
