"""Parameter and FLOP counts of a referring segmentor, per part, with random weights.

The model is built from the config with random weights and nothing read from ``pretrained/`` (BERT from
its architecture, ``Pretrained`` init configs dropped, SyncBN -> BN; see
:func:`mmseg_ris.utils.benchmark.prepare_benchmark_config`), then one inference forward (image + a
``--num-tokens`` expression, batch 1) is traced with ``mmengine.analysis.FlopAnalyzer``. Printed: total
and trainable parameters, FLOPs (one multiply-add = one FLOP), both per part (visual backbone, text
encoder, fusion modules, decode head, auxiliary heads), FLOPs per operator type, the operators that were
skipped (no FLOP formula: element-wise arithmetic, activations, softmax, custom CUDA functions) and the
parameters that inference does not use. See docs/analysis_tools.md and
:mod:`mmseg_ris.utils.complexity` for what is and is not counted.

Examples::

    python tools/analysis_tools/get_flops.py configs/lavt/lavt_swin-b_bert-base_4xb8-40e_refcoco-480x480.py
    python tools/analysis_tools/get_flops.py configs/lavt/lavt_tiny_synthetic.py --shape 64 64 \\
        --num-tokens 20 --depth 2 --out work_dirs/flops_tiny.json
"""
import argparse
import json
import os
import os.path as osp
import sys

from mmengine.config import Config, DictAction

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Parameters and FLOPs (per part) of a referring segmentor, random weights')
    parser.add_argument('config', help='config file')
    parser.add_argument('--shape', type=int, nargs='+', default=None, metavar='N',
                        help='input size: H W, or one number for a square (default: the config\'s '
                        'data_preprocessor.size)')
    parser.add_argument('--num-tokens', type=int, default=20,
                        help='token sequence length of the expression (LAVT / MagNet: 20)')
    parser.add_argument('--depth', type=int, default=0,
                        help='also list every module down to this depth (0: parts only)')
    parser.add_argument('--device', default='cpu', help='device to build and trace on (cpu, cuda)')
    parser.add_argument('--out', default=None, help='also write the report as JSON here')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, e.g. model.decode_head.channels=256')
    args = parser.parse_args(argv)
    if args.shape is not None:
        if len(args.shape) not in (1, 2) or any(s <= 0 for s in args.shape):
            parser.error(f'--shape takes H W or one size, all positive; got {args.shape}')
        if len(args.shape) == 1:
            args.shape = args.shape * 2
    if args.num_tokens < 3:
        parser.error(f'--num-tokens must be >= 3 ([CLS], a word, [SEP]), got {args.num_tokens}')
    if args.depth < 0:
        parser.error(f'--depth must be >= 0, got {args.depth}')
    return args


def main(argv=None):
    args = parse_args(argv)
    if REPO_ROOT not in sys.path:
        sys.path.insert(0, REPO_ROOT)
    from mmseg_ris.utils.complexity import complexity_of_config, format_complexity

    if not osp.isfile(args.config):
        raise SystemExit(f'get_flops.py: config file {args.config!r} does not exist')
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    report = complexity_of_config(cfg, args.shape, args.num_tokens, args.device, depth=args.depth)
    report['config'] = args.config
    print(format_complexity(report))
    if args.out:
        os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
        with open(args.out, 'w') as f:
            json.dump(report, f, indent=2)
        print(f'\nreport written to {args.out}')
    return report


if __name__ == '__main__':
    main()
