"""Convert REFER ``refs(<split_by>).p`` pickles to ``refs(<split_by>).json``.

The pickles are read with :class:`mmseg_ris.datasets.refer.RestrictedUnpickler`, which
refuses anything but plain containers, so a tampered file cannot run code. The JSON file
is written next to the pickle with the same stem; ``RefCOCODataset`` reads either (the
pickle when both exist). Each output is read back and compared with the pickle's content
before the command reports success. A progress bar over the files goes to stderr
(``--no-progress`` turns it off); the report lines are the same either way.

Examples::

    python tools/dataset_converters/refer_pickle_to_json.py data/refcoco data/refcoco+ data/refcocog
    python tools/dataset_converters/refer_pickle_to_json.py "data/refclef/refs(berkeley).p"
    python tools/dataset_converters/refer_pickle_to_json.py data --recursive
"""
import argparse
import glob
import os.path as osp
import pickle
import sys
from typing import List, Optional, Sequence

from tqdm import tqdm

from mmseg_ris.datasets.refer import PICKLE_SUFFIXES, load_refs, save_refs_json
from mmseg_ris.utils import progress_bar

# refs(unc).p, refs(umd).p, grefs(unc).p, ...; parentheses are not glob syntax.
REFS_PATTERNS = ('refs(*).p', 'grefs(*).p')


def find_pickles(folder: str, recursive: bool = False) -> List[str]:
    """REFER refs pickles in ``folder`` (and its subfolders with ``recursive``).

    Args:
        folder (str): A dataset folder such as ``data/refcoco``.
        recursive (bool): Search subfolders too.

    Returns:
        list[str]: Sorted paths.
    """
    found = set()
    for pattern in REFS_PATTERNS:
        found.update(glob.glob(osp.join(glob.escape(folder), pattern)))
        if recursive:
            found.update(glob.glob(osp.join(glob.escape(folder), '**', pattern), recursive=True))
    return sorted(found)


def report(bar: tqdm, message: str, file=None) -> None:
    """Print a line above the progress bar instead of onto it."""
    file = sys.stdout if file is None else file
    with bar.external_write_mode(file=file):
        print(message, file=file, flush=True)


def convert_file(src: str, overwrite: bool = False) -> Optional[str]:
    """Convert one refs pickle to JSON next to it.

    Args:
        src (str): ``refs(<split_by>).p`` (or ``.pkl`` / ``.pickle``).
        overwrite (bool): Replace an existing JSON file.

    Returns:
        str | None: The JSON path, or None when it existed and ``overwrite`` is False.

    Raises:
        ValueError: If ``src`` is not a pickle or the written JSON differs on re-reading.
        pickle.UnpicklingError: If the pickle tries to import anything.
    """
    stem, suffix = osp.splitext(src)
    if suffix.lower() not in PICKLE_SUFFIXES:
        raise ValueError(f'{src}: not a refs pickle (expected a suffix in {PICKLE_SUFFIXES})')
    dst = stem + '.json'
    if osp.exists(dst) and not overwrite:
        return None
    refs = load_refs(src)
    save_refs_json(refs, dst)
    if load_refs(dst) != refs:
        raise ValueError(f'{dst}: re-reading the JSON does not give the refs of {src}')
    return dst


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Convert REFER refs(<split_by>).p pickles to JSON through a restricted '
        'unpickler (plain containers only).')
    parser.add_argument('paths', nargs='+',
                        help='dataset folders (every refs(*).p / grefs(*).p inside) or files')
    parser.add_argument('--recursive', action='store_true', help='search folders recursively')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace JSON files that already exist')
    parser.add_argument('--no-progress', action='store_true',
                        help='no progress bar over the files (it goes to stderr)')
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command line entry point.

    Args:
        argv (Sequence[str], optional): Arguments; ``sys.argv[1:]`` when None.

    Returns:
        int: 0 on success; 1 when a path does not exist or holds no refs pickle, or a file
        could not be converted (e.g. a pickle that tries to import code).
    """
    args = parse_args(argv)
    sources: List[str] = []
    for path in args.paths:
        if osp.isdir(path):
            found = find_pickles(path, args.recursive)
            if not found:
                print(f'error: no refs(*).p or grefs(*).p in {path}'
                      f'{"" if args.recursive else " (use --recursive for subfolders)"}',
                      file=sys.stderr)
                return 1
            sources.extend(found)
        elif osp.isfile(path):
            sources.append(path)
        else:
            print(f'error: {path} does not exist', file=sys.stderr)
            return 1
    failed = 0
    # Per file: reading and checking one refs file is a single call (seconds for RefCOCOg).
    bar = progress_bar(total=len(sources), desc='refs files', enable=not args.no_progress)
    with bar:
        for src in sources:
            try:
                dst = convert_file(src, overwrite=args.overwrite)
            except (pickle.UnpicklingError, ValueError) as err:
                # Keep going: one bad file should not hide the state of the others.
                report(bar, f'error: {err}', file=sys.stderr)
                failed += 1
            else:
                if dst is None:
                    report(bar, f'skipped {src}: {osp.splitext(src)[0]}.json exists (use --overwrite)')
                else:
                    report(bar, f'converted {src} -> {dst}')
            bar.update(1)
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
