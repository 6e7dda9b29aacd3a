"""Score a test run per word and per combination of word kinds (which words has the model grounded?).

First evaluate with per-sentence results::

    python tools/test.py CONFIG CHECKPOINT --out DIR

then::

    python tools/analysis_tools/word_breakdown.py CONFIG DIR --group attribute

prints, for the sentences of the group (all if no ``--group``), the oIoU / mIoU of the sentences using
each combination of word kinds (``--word-kinds``; by default the synthetic set's colour, shape and size
words) and of every word used by at least ``--min-count`` sentences, lowest first, and writes both tables
to ``DIR/word_breakdown.json`` (``--out`` to change). The sentences' texts come from the config's test
dataset, so pass the config (and ``--cfg-options``) of the test run.

Word kinds for another vocabulary: ``--word-kinds colour=red,green,blue side=left,right``.
"""
import argparse
import json
import os.path as osp
import sys

from mmengine.config import Config, DictAction

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='oIoU / mIoU of a tools/test.py --out folder per word and per word kinds')
    parser.add_argument('config', help='the config of the test run')
    parser.add_argument('result_dir', help='the --out folder of tools/test.py')
    parser.add_argument('--group', default=None,
                        help='only sentences of this group (the expression type: attribute, ...)')
    parser.add_argument('--min-count', type=int, default=10,
                        help='per-word table: words in at least this many sentences (default 10)')
    parser.add_argument('--word-kinds', nargs='+', default=None, metavar='KIND=W1,W2,...',
                        help='word kinds for the combination table (default: the synthetic set\'s '
                        'colour, shape and size words)')
    parser.add_argument('--out', default=None,
                        help='JSON output (default: RESULT_DIR/word_breakdown.json)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='the overrides of the test run, e.g. test_dataloader.dataset.split=testA')
    args = parser.parse_args(argv)
    if args.min_count < 1:
        parser.error(f'--min-count must be >= 1, got {args.min_count}')
    kinds = {}
    for item in args.word_kinds or []:
        name, sep, words = item.partition('=')
        words = [w.strip().lower() for w in words.split(',') if w.strip()]
        if not sep or not name or not words:
            parser.error(f'--word-kinds: expected KIND=WORD1,WORD2,..., got {item!r}')
        kinds[name] = words
    args.word_kinds = kinds or None
    return args


def _table(rows, key):
    lines = [f'{key:>24s} {"sentences":>9s} {"oIoU":>6s} {"mIoU":>6s}']
    lines += [f'{r[key]:>24s} {r["sentences"]:9d} {r["oIoU"]:6.2f} {r["mIoU"]:6.2f}' for r in rows]
    return '\n'.join(lines)


def main(argv=None):
    args = parse_args(argv)
    if REPO_ROOT not in sys.path:
        sys.path.insert(0, REPO_ROOT)
    from mmseg_ris.datasets.synthetic import ATTRIBUTE_WORDS
    from mmseg_ris.evaluation.word_breakdown import breakdown_by_word, breakdown_by_word_kinds
    from mmseg_ris.visualization.worst import (build_test_dataset, index_by_ids,
                                               load_per_sentence)

    if not osp.isfile(args.config):
        raise SystemExit(f'word_breakdown.py: config file {args.config!r} does not exist')
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    try:
        records = load_per_sentence(args.result_dir)
        dataset = build_test_dataset(cfg)
        texts = {key: dataset.get_data_info(i)['text'] for key, i in index_by_ids(dataset).items()}
        kinds = args.word_kinds or dict(ATTRIBUTE_WORDS)
        by_kinds = breakdown_by_word_kinds(records, texts, kinds, args.group)
        by_word = breakdown_by_word(records, texts, args.min_count, args.group)
    except (FileNotFoundError, KeyError, ValueError) as e:
        raise SystemExit(f'word_breakdown.py: {e.args[0] if e.args else e}') from None
    scope = f'group {args.group!r}' if args.group else 'all groups'
    print(f'{sum(r["sentences"] for r in by_kinds)} sentences ({scope}) by the kinds of word they use:')
    print(_table(by_kinds, 'kinds'))
    print(f'\nwords in at least {args.min_count} sentences, lowest oIoU first:')
    print(_table(by_word, 'word'))
    out = args.out or osp.join(args.result_dir, 'word_breakdown.json')
    with open(out, 'w') as f:
        json.dump(dict(group=args.group, word_kinds=kinds, by_kinds=by_kinds, by_word=by_word), f,
                  indent=1)
    print(f'\nwritten to {out}')
    return dict(by_kinds=by_kinds, by_word=by_word, out=out)


if __name__ == '__main__':
    main()
