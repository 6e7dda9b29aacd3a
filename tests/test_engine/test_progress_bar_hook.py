"""RISProgressBarHook draws a bar over the val/test batches on the main process, and closes it."""
import logging
import os.path as osp
import re
import sys
import warnings
from types import SimpleNamespace

import pytest
from mmengine.config import Config

import mmseg_ris  # noqa: F401
from mmseg.registry import HOOKS
from mmseg_ris.engine import RISProgressBarHook
from mmseg_ris.engine.hooks import progress_bar_hook

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


class _NoLen:
    """A dataloader stand-in without ``__len__`` (as over an iterable dataset)."""

    def __init__(self, n):
        self.n = n

    def __iter__(self):
        return iter(range(self.n))


def _runner(val=(), test=(), logger=None):
    return SimpleNamespace(val_dataloader=val, test_dataloader=test, logger=logger)


def _run(hook, runner, split):
    """Drive the hook as ValLoop / TestLoop do; return the bar's count seen after each batch."""
    loader = getattr(runner, f'{split}_dataloader')
    getattr(hook, f'before_{split}_epoch')(runner)
    counts = []
    for idx, batch in enumerate(loader):
        bar = hook.bar
        getattr(hook, f'after_{split}_iter')(runner, idx, batch, outputs=[])
        counts.append(bar.n)
    getattr(hook, f'after_{split}_epoch')(runner, metrics={})
    return counts


def _last_state(err):
    """The last state the bar printed (tqdm separates redraws with carriage returns)."""
    return [s for s in re.split(r'[\r\n]', err) if s.strip()][-1]


@pytest.mark.parametrize('split', ['val', 'test'])
def test_bar_counts_every_batch_and_closes(split, capsys):
    batches = [f'batch{i}' for i in range(7)]
    hook = HOOKS.build(dict(type='RISProgressBarHook'))
    runner = _runner(**{split: batches})
    counts = _run(hook, runner, split)
    assert counts == list(range(1, 8))
    assert hook.bar is None
    out, err = capsys.readouterr()
    assert out == ''
    # Closed bars end with a newline; the final state shows all batches of the known total.
    assert err.endswith('\n')
    assert re.match(rf'{split}: 100%.* 7/7 ', _last_state(err))


def test_bar_without_len_counts_without_total(capsys):
    hook = RISProgressBarHook()
    counts = _run(hook, _runner(val=_NoLen(5)), 'val')
    assert counts == [1, 2, 3, 4, 5]
    assert hook.bar is None
    last = _last_state(capsys.readouterr().err)
    assert last.startswith('val: 5it ') and '%' not in last


def test_bar_restarts_for_each_run(capsys):
    hook = RISProgressBarHook()
    runner = _runner(val=list(range(3)), test=list(range(4)))
    assert _run(hook, runner, 'val') == [1, 2, 3]
    assert _run(hook, runner, 'test') == [1, 2, 3, 4]
    assert _run(hook, runner, 'val') == [1, 2, 3]
    # One closed bar (one line) per run, each finished.
    finals = [_last_state(line) for line in capsys.readouterr().err.split('\n') if line]
    assert [s.split('|')[0] for s in finals] == ['val: 100%', 'test: 100%', 'val: 100%']
    assert [s.split('| ')[1].split()[0] for s in finals] == ['3/3', '4/4', '3/3']


def test_interrupted_run_closes_bar_at_epoch_end(capsys):
    # An unknown length keeps the bar open after the last batch; the epoch end closes it.
    hook = RISProgressBarHook()
    runner = _runner(test=_NoLen(2))
    hook.before_test_epoch(runner)
    hook.after_test_iter(runner, 0)
    assert hook.bar is not None and hook.bar.n == 1
    hook.after_test_epoch(runner)
    assert hook.bar is None
    assert capsys.readouterr().err.endswith('\n')


def test_non_main_rank_and_disabled_draw_nothing(monkeypatch, capsys):
    runner = _runner(val=list(range(4)), test=list(range(4)))
    disabled = HOOKS.build(dict(type='RISProgressBarHook', enable=False))
    disabled.before_val_epoch(runner)
    assert disabled.bar is None
    disabled.after_val_iter(runner, 0)
    disabled.after_val_epoch(runner)

    monkeypatch.setattr(progress_bar_hook, 'is_main_process', lambda: False)
    hook = RISProgressBarHook()
    for split in ('val', 'test'):
        getattr(hook, f'before_{split}_epoch')(runner)
        assert hook.bar is None
        getattr(hook, f'after_{split}_iter')(runner, 0)
        getattr(hook, f'after_{split}_epoch')(runner)
    assert capsys.readouterr() == ('', '')


def test_log_lines_are_written_above_the_bar(tmp_path, capsys):
    # A console handler on the bar's stream, as in a terminal where stdout and stderr meet.
    logger = logging.getLogger('test_progress_bar_hook')
    logger.propagate = False
    logger.setLevel(logging.INFO)
    console = logging.StreamHandler(sys.stderr)
    log_file = logging.FileHandler(str(tmp_path / 'run.log'))
    logger.handlers = [console, log_file]
    try:
        hook = RISProgressBarHook()
        runner = _runner(val=list(range(3)), logger=logger)
        hook.before_val_epoch(runner)
        assert console.stream is not sys.stderr       # wrapped while the bar is open
        hook.after_val_iter(runner, 0)
        logger.info('Epoch(val) [1/3]')
        hook.after_val_iter(runner, 1)
        hook.after_val_iter(runner, 2)
        # Closed at the last batch, before the evaluator logs; the console stream is restored.
        assert hook.bar is None and console.stream is sys.stderr
        hook.after_val_epoch(runner)
        logger.info('metrics')
    finally:
        logger.handlers = []
        log_file.close()
    err = capsys.readouterr().err
    before, after = err.split('Epoch(val) [1/3]\n')
    # The bar's text was blanked out and the cursor returned before the log line ...
    assert re.search(r'0/3 [^\r]*\r *\r$', before)
    # ... then the bar was redrawn below it, and the metrics come after the closed bar.
    assert re.match(r'\rval: +33%.* 1/3 ', after)
    assert re.search(r' 3/3 [^\r]*\nmetrics\n$', after)
    # The log file is left as it is: no bar, no control characters.
    assert (tmp_path / 'run.log').read_text() == 'Epoch(val) [1/3]\nmetrics\n'


def test_warnings_are_written_above_the_bar(capsys):
    def original(message, category, filename, lineno, file=None, line=None):
        # What Python's default does; pytest's own warning capture would swallow the text.
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))

    with warnings.catch_warnings():
        warnings.simplefilter('always')
        warnings.showwarning = original
        hook = RISProgressBarHook()
        runner = _runner(test=list(range(2)))
        hook.before_test_epoch(runner)
        warnings.warn('align_corners', UserWarning)
        hook.after_test_iter(runner, 0)
        hook.after_test_iter(runner, 1)
        assert warnings.showwarning is original
    err = capsys.readouterr().err
    before, after = err.split('UserWarning: align_corners\n')
    assert re.search(r'0/2 [^\r]*\r *\r[^\r]*test_progress_bar_hook.py:\d+: $', before)
    assert re.match(r'.*\n\rtest: +0%.* 0/2 ', after)
    assert re.search(r' 2/2 [^\r]*\n$', after)


def test_default_runtime_adds_the_hook_once():
    cfg = Config.fromfile(osp.join(REPO, 'configs', 'lavt', 'lavt_tiny_synthetic.py'))
    hooks = [h for h in cfg.custom_hooks if h['type'] == 'RISProgressBarHook']
    assert len(hooks) == 1
    assert isinstance(HOOKS.build(hooks[0]), RISProgressBarHook)
    cfg.merge_from_dict({'custom_hooks.0.enable': False})
    assert HOOKS.build(cfg.custom_hooks[0]).enable is False
