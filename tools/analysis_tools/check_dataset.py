"""Check a referring dataset: per-split counts, mask areas, token lengths and a few rendered samples.

Example::

    python tools/analysis_tools/check_dataset.py configs/_base_/datasets/synthetic_refcoco.py \
        --splits train val testA testB --out-dir work_dirs/check_synthetic --num-render 8
"""
import argparse
import copy
import json
import os
import os.path as osp

from mmengine.config import Config, DictAction
from mmengine.registry import init_default_scope

from mmseg.registry import DATASETS, TRANSFORMS


def parse_args():
    parser = argparse.ArgumentParser(description='Statistics and sample renders of a referring dataset')
    parser.add_argument('config', help='a config with val_dataloader / train_dataloader')
    parser.add_argument('--splits', nargs='+', default=None,
                        help='splits to scan (default: train and the val split of the config)')
    parser.add_argument('--out-dir', default=None, help='where stats.json and the renders go')
    parser.add_argument('--num-render', type=int, default=6, help='samples rendered per split')
    parser.add_argument('--no-progress', action='store_true')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config settings')
    return parser.parse_args()


def _find(pipeline, type_name):
    for t in pipeline:
        if t.get('type') == type_name:
            return copy.deepcopy(t)
    raise KeyError(f'the config pipeline has no {type_name} transform')


def main():
    args = parse_args()
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    import mmseg_ris  # noqa: F401  (registers the datasets and transforms)

    base = copy.deepcopy(cfg.val_dataloader.dataset)
    splits = args.splits or [cfg.train_dataloader.dataset.split, base.split]
    tokenize = TRANSFORMS.build(_find(base.pipeline, 'TokenizeText'))
    mask_loader = TRANSFORMS.build(_find(base.pipeline, 'LoadRefMask'))
    out_dir = args.out_dir or osp.join('work_dirs', 'check_' + osp.splitext(osp.basename(args.config))[0])
    os.makedirs(out_dir, exist_ok=True)

    from mmseg_ris.datasets.dataset_stats import split_statistics
    report = {}
    for split in splits:
        ds_cfg = copy.deepcopy(base)
        ds_cfg.update(split=split, sentence_mode='all', pipeline=[])
        dataset = DATASETS.build(ds_cfg)
        print(f'== {ds_cfg.get("dataset_name")} ({ds_cfg.get("split_by")}) {split}: {len(dataset)} sentences')
        report[split] = split_statistics(
            dataset, mask_loader, tokenize.tokenizer, tokenize.max_length,
            render_dir=osp.join(out_dir, 'renders'), num_render=args.num_render,
            progress=not args.no_progress)

    header = f'{"split":8s} {"images":>7s} {"refs":>7s} {"sents":>7s} {"neg":>5s} ' \
             f'{"area%":>6s} {"tok":>5s} {"tok>max":>7s} {"errors":>6s}'
    print(header)
    for split, r in report.items():
        area = r['mask_area_fraction'].get('mean', float('nan')) * 100
        tok = r['token_length'].get('mean', float('nan'))
        print(f'{split:8s} {r["images"]:7d} {r["referents"]:7d} {r["sentences"]:7d} '
              f'{r["negative_sentences"]:5d} {area:6.2f} {tok:5.1f} {r["truncated"]:7d} {len(r["errors"]):6d}')
        for t, c in r['expression_types'].items():
            print(f'    {t:12s} {c:7d}')
        for e in r['errors'][:10]:
            print('    ERROR', e)
    with open(osp.join(out_dir, 'stats.json'), 'w') as f:
        json.dump(report, f, indent=2)
    print(f'stats and renders written to {out_dir}')
    if any(r['errors'] for r in report.values()):
        raise SystemExit(1)


if __name__ == '__main__':
    main()
