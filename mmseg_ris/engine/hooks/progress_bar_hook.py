"""A progress bar over the batches of the val and test loops."""
import logging
import warnings
from typing import IO, Callable, List, Optional, Tuple

from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmengine.runner import Runner
from tqdm import tqdm

from mmseg.registry import HOOKS
from ...utils.progress import progress_bar


class _BarAwareStream:
    """Wraps a console log stream so that each log line lifts the bar off the line first.

    Without it a log line written while the bar is drawn would be appended to the bar's text.
    """

    def __init__(self, stream: IO[str], bar: tqdm):
        self.stream = stream
        self.bar = bar

    def write(self, text: str) -> int:
        self.bar.clear()
        written = self.stream.write(text)
        # stdout may be buffered while the bar goes to unbuffered stderr: flush to keep the order.
        self.stream.flush()
        self.bar.refresh()
        return written

    def flush(self) -> None:
        self.stream.flush()

    def __getattr__(self, name):
        return getattr(self.stream, name)


def _bar_aware_showwarning(show: Callable, bar: tqdm) -> Callable:
    """``warnings.showwarning`` that lifts the bar off the line while the warning is printed."""

    def showwarning(*args, **kwargs):
        bar.clear()
        show(*args, **kwargs)
        bar.refresh()

    return showwarning


def _num_batches(dataloader) -> Optional[int]:
    """``len(dataloader)``, or None when it has no length (e.g. over an iterable dataset)."""
    try:
        return len(dataloader)
    except (TypeError, NotImplementedError):
        return None


@HOOKS.register_module()
class RISProgressBarHook(Hook):
    """Show a progress bar on stderr over the batches of each validation and test run.

    The bar is drawn on the main process only and closed after the last batch, so the metric
    summary is logged below a finished bar. While it is open, the runner logger's console lines
    and Python warnings are written above it rather than onto it.

    Args:
        enable (bool): Whether to draw the bar. Defaults to True. tqdm already limits how often
            the bar is redrawn (see :func:`mmseg_ris.utils.progress.progress_bar`), so it advances
            on every batch.
    """
    # Before LoggerHook (BELOW_NORMAL): the bar is closed before the epoch summary is logged.
    priority = 'NORMAL'

    def __init__(self, enable: bool = True):
        self.enable = enable
        self.bar: Optional[tqdm] = None
        self._patched: List[Tuple[logging.StreamHandler, IO[str]]] = []
        self._showwarning: Optional[Tuple[Callable, Callable]] = None

    def _open(self, runner: Runner, dataloader, desc: str) -> None:
        self._close()
        if not self.enable or not is_main_process():
            return
        self.bar = progress_bar(total=_num_batches(dataloader), desc=desc)
        logger = getattr(runner, 'logger', None)
        for handler in getattr(logger, 'handlers', []):
            # Console handlers only: log files are not where the bar is drawn.
            if isinstance(handler, logging.StreamHandler) and not isinstance(
                    handler, logging.FileHandler):
                self._patched.append((handler, handler.setStream(
                    _BarAwareStream(handler.stream, self.bar))))
        wrapped = _bar_aware_showwarning(warnings.showwarning, self.bar)
        self._showwarning = (warnings.showwarning, wrapped)
        warnings.showwarning = wrapped

    def _advance(self) -> None:
        if self.bar is None:
            return
        self.bar.update(1)
        # Close at the last batch, before the evaluator computes and logs the metrics.
        if self.bar.total is not None and self.bar.n >= self.bar.total:
            self._close()

    def _close(self) -> None:
        for handler, stream in reversed(self._patched):
            handler.setStream(stream)
        self._patched = []
        if self._showwarning is not None:
            original, wrapped = self._showwarning
            # Leave alone a replacement installed by someone else meanwhile.
            if warnings.showwarning is wrapped:
                warnings.showwarning = original
            self._showwarning = None
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def before_val_epoch(self, runner: Runner) -> None:
        self._open(runner, runner.val_dataloader, 'val')

    def after_val_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        self._advance()

    def after_val_epoch(self, runner, metrics=None) -> None:
        self._close()

    def before_test_epoch(self, runner: Runner) -> None:
        self._open(runner, runner.test_dataloader, 'test')

    def after_test_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        self._advance()

    def after_test_epoch(self, runner, metrics=None) -> None:
        self._close()

    def after_run(self, runner: Runner) -> None:
        self._close()
