"""Training curves from MMEngine's scalar logs (``tools/analysis_tools/analyze_logs.py``).

MMEngine's ``LocalVisBackend`` writes ``{work_dir}/{timestamp}/vis_data/scalars.json`` (and an identical
``{timestamp}.json`` beside it): one JSON object per line.

* A training line (``LoggerHook`` after every ``interval`` iterations) holds the logged scalars (``lr``,
  ``loss``, ``decode.loss_ce``, ``grad_norm``, ``time`` ...), ``iter`` (the global iteration, from 1),
  ``epoch`` in epoch-based runs, and ``step`` (= ``iter``).
* A validation line (after every validation) holds the metrics (``ris/oIoU``, ``ris/mIoU`` ...),
  ``time`` / ``data_time`` and ``step``, and no ``iter``: ``step`` is the training iteration at which
  validation ran, or the epoch when ``LoggerHook(log_metric_by_epoch=True)`` in an epoch-based run
  (see :meth:`ScalarLog.val_step_unit`).

So a line with ``iter`` is a training line and any other line a validation line. ``tools/test.py``
writes no ``scalars.json``.

A training run that is resumed (``--resume``) writes a new ``{timestamp}`` folder in the same work
dir that continues the iteration count. Given a work dir, every ``*/vis_data/scalars.json`` is read in
timestamp order and merged; where two runs logged the same step (the iterations between the last
checkpoint and the interruption), the later run wins.
"""
import glob
import json
import math
import os.path as osp
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple, Union

__all__ = ['ScalarLog', 'find_scalar_files', 'load_scalar_log', 'get_series', 'summarize_series',
           'plot_curves']

# Keys of a training line that index it rather than being logged values.
_INDEX_KEYS = ('iter', 'step', 'epoch')


@dataclass
class ScalarLog:
    """Parsed scalar log: training and validation lines, keyed by step.

    Attributes:
        files (list[str]): The files read, in the order they were merged.
        train (dict[int, dict]): Training lines by ``iter``.
        val (dict[int, dict]): Validation lines by ``step``.
    """
    files: List[str] = field(default_factory=list)
    train: Dict[int, dict] = field(default_factory=dict)
    val: Dict[int, dict] = field(default_factory=dict)

    def keys(self, mode: str) -> List[str]:
        """Sorted logged keys (index keys left out) of ``'train'`` or ``'val'`` lines."""
        lines = self._lines(mode)
        return sorted({k for line in lines.values() for k in line if k not in _INDEX_KEYS})

    def val_step_unit(self) -> str:
        """``'epoch'`` or ``'iteration'``: what the validation lines' ``step`` counts.

        Epoch-based runs log ``epoch`` on training lines and, with ``LoggerHook``'s default
        ``log_metric_by_epoch=True``, the epoch as the validation step; then no validation step exceeds
        the last logged epoch. Otherwise the step is the iteration.
        """
        epochs = [int(line['epoch']) for line in self.train.values() if 'epoch' in line]
        if epochs and self.val and max(self.val) <= max(epochs) < max(self.train):
            return 'epoch'
        return 'iteration'

    def _lines(self, mode: str) -> Dict[int, dict]:
        if mode not in ('train', 'val'):
            raise ValueError(f"mode must be 'train' or 'val', got {mode!r}")
        return self.train if mode == 'train' else self.val


def find_scalar_files(path: str) -> List[str]:
    """The scalar logs of a work dir (every run, oldest first) or the given JSON file itself.

    Args:
        path (str): A ``.json`` scalar log, a ``{timestamp}`` run folder, or a work dir holding run
            folders.

    Returns:
        list[str]: Existing files, sorted by run folder name (MMEngine's ``YYYYmmdd_HHMMSS``).

    Raises:
        FileNotFoundError: If ``path`` does not exist or holds no ``vis_data/scalars.json``.
    """
    if osp.isfile(path):
        return [path]
    if not osp.isdir(path):
        raise FileNotFoundError(f'{path!r} is neither a scalar log (.json) nor a work dir')
    own = osp.join(path, 'vis_data', 'scalars.json')
    if osp.isfile(own):
        return [own]
    found = sorted(glob.glob(osp.join(path, '*', 'vis_data', 'scalars.json')))
    if not found:
        raise FileNotFoundError(
            f'no */vis_data/scalars.json under {path!r}: is it the work dir of a training run '
            '(tools/train.py writes {work_dir}/{timestamp}/vis_data/scalars.json with '
            "visualizer.vis_backends=[dict(type='LocalVisBackend')])?")
    return found


def load_scalar_log(path: Union[str, Sequence[str]]) -> ScalarLog:
    """Read and merge scalar logs.

    Args:
        path (str | Sequence[str]): A work dir, a run folder or a JSON file (see
            :func:`find_scalar_files`), or a list of JSON files merged in the given order.

    Returns:
        ScalarLog: Training lines by ``iter`` and validation lines by ``step``; a later file's line
        replaces an earlier one with the same step.

    Raises:
        ValueError: If a line is not a JSON object, or a line has neither ``iter`` nor ``step``
            (the file and line number are named).
    """
    files = find_scalar_files(path) if isinstance(path, str) else list(path)
    log = ScalarLog(files=files)
    for fname in files:
        with open(fname) as f:
            for lineno, text in enumerate(f, 1):
                text = text.strip()
                if not text:
                    continue
                try:
                    line = json.loads(text)
                except json.JSONDecodeError as e:
                    raise ValueError(f'{fname}:{lineno}: not a JSON line ({e.msg})') from None
                if not isinstance(line, dict):
                    raise ValueError(f'{fname}:{lineno}: expected a JSON object, got '
                                     f'{type(line).__name__}')
                if 'iter' in line:
                    log.train[int(line['iter'])] = line
                elif 'step' in line:
                    log.val[int(line['step'])] = line
                else:
                    raise ValueError(f'{fname}:{lineno}: a scalar line has "iter" (training) or '
                                     f'"step" (validation); found keys {sorted(line)}')
    if not log.train and not log.val:
        raise ValueError(f'no scalar lines in {files}')
    return log


def get_series(log: ScalarLog, key: str, mode: str = 'train') -> Tuple[List[int], List[float]]:
    """The steps and values of one key, in step order.

    Args:
        log (ScalarLog): The parsed log.
        key (str): A logged key, e.g. ``'loss'``, ``'decode.loss_ce'``, ``'ris/oIoU'``.
        mode (str): ``'train'`` (x = iteration) or ``'val'`` (x = step of the validation line).

    Returns:
        tuple[list[int], list[float]]: Steps and values of the lines that hold ``key`` (lines without
        it, e.g. an interval that skipped it, are left out).

    Raises:
        KeyError: If no line of that mode has ``key``; the message lists the available keys of both
            modes.
        ValueError: If a value is not a number.
    """
    lines = log._lines(mode)
    steps, values = [], []
    for step in sorted(lines):
        if key in lines[step]:
            value = lines[step][key]
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f'{mode} key {key!r} at step {step} is not a number: {value!r}')
            steps.append(step)
            values.append(float(value))
    if not steps:
        other = 'val' if mode == 'train' else 'train'
        hint = ''
        if key in log.keys(other):
            hint = (f' ({key!r} is a {"validation" if other == "val" else "training"} key: '
                    f'plot it with {"--val-keys" if other == "val" else "--keys"})')
        raise KeyError(
            f'{mode} key {key!r} is not in the log {log.files}{hint}; training keys: '
            f'{log.keys("train") or "none"}; validation keys: {log.keys("val") or "none"}')
    return steps, values


def summarize_series(steps: Sequence[int], values: Sequence[float]) -> Dict[str, float]:
    """First, last, minimum and maximum of a series, with their steps (NaN values ignored for min/max).

    Args:
        steps (Sequence[int]): Steps of the series.
        values (Sequence[float]): Its values.

    Returns:
        dict: ``points``, ``first``, ``last``, ``min``, ``min_step``, ``max``, ``max_step``.
    """
    finite = [(v, s) for s, v in zip(steps, values) if not math.isnan(v)]
    out = dict(points=len(values), first=values[0], last=values[-1])
    if finite:
        vmin, smin = min(finite, key=lambda t: (t[0], t[1]))
        vmax, smax = max(finite, key=lambda t: (t[0], -t[1]))
        out.update(min=vmin, min_step=smin, max=vmax, max_step=smax)
    return out


def plot_curves(logs: Dict[str, ScalarLog],
                out: str,
                keys: Sequence[str] = ('loss', ),
                val_keys: Sequence[str] = (),
                title: Optional[str] = None,
                dpi: int = 100) -> Dict[str, Dict[str, Dict[str, float]]]:
    """Plot training and validation curves of one or more runs to an image file.

    One panel per key (training keys first, then validation keys); every run is a line in each panel.
    Matplotlib's object API with the Agg canvas is used, so no display and no global backend change.

    Args:
        logs (dict[str, ScalarLog]): Runs by legend label.
        out (str): Output image (``.png``, or any format Matplotlib writes).
        keys (Sequence[str]): Training keys (x = iteration).
        val_keys (Sequence[str]): Validation keys (x = the validation line's step).
        title (str, optional): Figure title.
        dpi (int): Resolution.

    Returns:
        dict: ``{'train:KEY' / 'val:KEY': {label: summarize_series(...)}}``.

    Raises:
        ValueError: If no key is given or ``logs`` is empty.
        KeyError: If a run lacks a key (from :func:`get_series`).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = [('train', k) for k in keys] + [('val', k) for k in val_keys]
    if not panels:
        raise ValueError('nothing to plot: give at least one training or validation key')
    if not logs:
        raise ValueError('nothing to plot: no log given')
    # Read every series before drawing, so a missing key fails before any file is written.
    series = {(mode, key): {label: get_series(log, key, mode) for label, log in logs.items()}
              for mode, key in panels}
    fig = Figure(figsize=(8, 3 * len(panels)), dpi=dpi)
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(panels), 1, squeeze=False)[:, 0]
    summary: Dict[str, Dict[str, Dict[str, float]]] = {}
    # Validation by iteration shares the training x range, so the panels line up.
    train_steps = [s for log in logs.values() for s in log.train]
    val_unit = ' / '.join(sorted({log.val_step_unit() for log in logs.values()}))
    for ax, (mode, key) in zip(axes, panels):
        for label, (steps, values) in series[(mode, key)].items():
            style = dict(marker='o', markersize=3) if mode == 'val' or len(steps) == 1 else {}
            ax.plot(steps, values, label=label, linewidth=1, **style)
            summary.setdefault(f'{mode}:{key}', {})[label] = summarize_series(steps, values)
        ax.set_title(f'{key} ({"training" if mode == "train" else "validation"})', fontsize=10)
        ax.set_xlabel('iteration' if mode == 'train' else val_unit)
        if mode == 'val' and val_unit == 'iteration' and train_steps:
            steps = [s for st, _ in series[(mode, key)].values() for s in st] + train_steps
            lo, hi = min(steps), max(steps)
            pad = 0.03 * max(hi - lo, 1)
            ax.set_xlim(lo - pad, hi + pad)
        ax.set_ylabel(key)
        ax.grid(True, alpha=0.3)
        if len(logs) > 1:
            ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out)
    return summary
