"""One progress bar for every long loop of the project (data generation, scans, benchmarks)."""
import sys
from typing import Iterable, Optional

from tqdm import tqdm


def progress_bar(iterable: Optional[Iterable] = None,
                 total: Optional[int] = None,
                 desc: str = '',
                 enable: bool = True) -> tqdm:
    """A tqdm bar on stderr that stays readable in log files.

    On a terminal it refreshes twice a second; when stderr is a file or a pipe (CI, Slurm logs) it writes
    a line every 15 seconds instead of one per item.

    Args:
        iterable (Iterable, optional): What to iterate over; or call ``update()`` by hand.
        total (int, optional): Number of items, if ``len(iterable)`` is not available.
        desc (str): Label in front of the bar.
        enable (bool): False returns a silent bar with the same interface.
    """
    tty = sys.stderr.isatty()
    return tqdm(iterable, total=total, desc=desc, disable=not enable, file=sys.stderr,
                mininterval=0.5 if tty else 15.0, ascii=not tty, dynamic_ncols=tty)
