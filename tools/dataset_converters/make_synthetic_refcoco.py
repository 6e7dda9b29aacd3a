"""Generate the synthetic RefCOCO-family dataset (RefCOCO, RefCOCO+, RefCOCOg,
R-RefCOCO, gRefCOCO formats) used by the default configs and the tests.

Example::

    python tools/dataset_converters/make_synthetic_refcoco.py \
        --out data/synthetic --num-images 2000 --seed 0

The same ``--num-images`` and ``--seed`` always give byte-identical files.
"""
import argparse
import json
import time
from typing import List, Optional

from mmseg_ris.datasets.synthetic import generate_synthetic_refcoco


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Command-line arguments.

    Args:
        argv (list[str], optional): Arguments; ``sys.argv[1:]`` if None.

    Returns:
        argparse.Namespace: ``out``, ``num_images``, ``seed``,
        ``no_progress`` and ``json``.
    """
    parser = argparse.ArgumentParser(
        description='Write a deterministic synthetic referring dataset in '
        'the real RefCOCO / R-RefCOCO / gRefCOCO on-disk formats')
    parser.add_argument('--out', required=True,
                        help='output root (e.g. data/synthetic)')
    parser.add_argument('--num-images', type=int, default=2000,
                        help='number of images (>= 4)')
    parser.add_argument('--seed', type=int, default=0,
                        help='random seed (>= 0)')
    parser.add_argument('--no-progress', action='store_true',
                        help='do not show the progress bar')
    parser.add_argument('--json', action='store_true',
                        help='print the statistics as JSON instead of a table')
    return parser.parse_args(argv)


def format_stats(stats: dict) -> str:
    """Readable table of the statistics returned by the generator.

    Args:
        stats (dict): Output of :func:`generate_synthetic_refcoco`.

    Returns:
        str: One block per dataset / split_by with per-split images, refs and
        sentences, then the per-expression-type sentence counts.
    """
    inst = stats['instances']
    lines = [
        f"images: {inst['images']}  annotations: {inst['annotations']}  "
        f"RLE (with holes): {inst['rle_annotations']}  "
        f"multi-part: {inst['multi_part_annotations']}  seed: {stats['seed']}"
    ]
    for name, by_split in stats['datasets'].items():
        for split_by, entry in by_split.items():
            lines.append(f'{name} ({split_by})')
            for split, c in entry['splits'].items():
                lines.append(f"  {split:<6} images {c['images']:>6}  "
                             f"refs {c['refs']:>6}  sentences "
                             f"{c['sentences']:>6}")
            types = '  '.join(f'{t} {n}'
                              for t, n in entry['expr_types'].items())
            lines.append(f'  expression types: {types}')
            extras = {k: v for k, v in entry.items()
                      if k not in ('splits', 'expr_types')}
            if extras:
                lines.append('  ' + '  '.join(f'{k} {v}'
                                              for k, v in extras.items()))
    return '\n'.join(lines)


def main(argv: Optional[List[str]] = None) -> dict:
    """Generate the dataset and print its statistics.

    Args:
        argv (list[str], optional): Arguments; ``sys.argv[1:]`` if None.

    Returns:
        dict: The statistics returned by the generator.
    """
    args = parse_args(argv)
    start = time.perf_counter()
    stats = generate_synthetic_refcoco(
        args.out, num_images=args.num_images, seed=args.seed,
        progress=not args.no_progress)
    elapsed = time.perf_counter() - start
    if args.json:
        print(json.dumps(stats, indent=2))
    else:
        print(format_stats(stats))
    print(f'wrote {args.out} in {elapsed:.1f} s')
    return stats


if __name__ == '__main__':
    main()
