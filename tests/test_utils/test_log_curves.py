"""Parsing and plotting MMEngine scalar logs (mmseg_ris.utils.log_curves) on hand-written files.

The lines follow what MMEngine 0.10.7 writes (checked on a tiny training run): training lines carry the
logged values, ``iter`` and ``step``; validation lines the metrics, ``time``/``data_time`` and ``step``.
"""
import json
import math
import os

import numpy as np
import pytest
from PIL import Image

from mmseg_ris.utils.log_curves import (find_scalar_files, get_series, load_scalar_log, plot_curves,
                                        summarize_series)

TRAIN = [dict(base_lr=1e-4 * i, lr=1e-4 * i, data_time=0.1, grad_norm=1.0 + i, loss=1.0 / i,
              **{'decode.loss_ce': 0.9 / i, 'decode.acc_seg': 10.0 * i}, time=0.3, iter=i, step=i)
         for i in range(1, 7)]
VAL = [{'ris/oIoU': 12.5, 'ris/mIoU': 10.0, 'ris/num_sentences': 8, 'data_time': 0.01, 'time': 0.02,
        'step': 3},
       {'ris/oIoU': 30.25, 'ris/mIoU': 20.0, 'ris/num_sentences': 8, 'data_time': 0.01, 'time': 0.02,
        'step': 6}]


def _write(path, lines):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
        for line in lines:
            f.write(json.dumps(line) + '\n')
    return str(path)


@pytest.fixture
def work_dir(tmp_path):
    # training lines with the validation lines where MMEngine puts them (after iterations 3 and 6)
    _write(tmp_path / 'work' / '20250101_120000' / 'vis_data' / 'scalars.json',
           TRAIN[:3] + VAL[:1] + TRAIN[3:] + VAL[1:])
    os.makedirs(tmp_path / 'work' / '20250101_130000' / 'vis_data')  # a test run: no scalars.json
    return str(tmp_path / 'work')


def test_series_equal_the_written_values(work_dir):
    log = load_scalar_log(work_dir)
    assert log.files == [os.path.join(work_dir, '20250101_120000', 'vis_data', 'scalars.json')]
    steps, values = get_series(log, 'loss')
    assert steps == [1, 2, 3, 4, 5, 6]
    assert values == [line['loss'] for line in TRAIN]
    assert get_series(log, 'decode.loss_ce')[1] == [line['decode.loss_ce'] for line in TRAIN]
    assert get_series(log, 'lr')[1] == [line['lr'] for line in TRAIN]
    assert get_series(log, 'ris/oIoU', 'val') == ([3, 6], [12.5, 30.25])
    # time is logged by both: each mode has its own series
    assert get_series(log, 'time', 'val') == ([3, 6], [0.02, 0.02])
    assert get_series(log, 'time')[1] == [0.3] * 6
    assert log.keys('train') == sorted(['base_lr', 'lr', 'data_time', 'grad_norm', 'loss',
                                        'decode.loss_ce', 'decode.acc_seg', 'time'])
    assert 'ris/mIoU' in log.keys('val') and 'step' not in log.keys('val')
    assert log.val_step_unit() == 'iteration'


def test_a_file_or_run_folder_can_be_given(work_dir):
    path = os.path.join(work_dir, '20250101_120000', 'vis_data', 'scalars.json')
    assert find_scalar_files(path) == [path]
    assert find_scalar_files(os.path.join(work_dir, '20250101_120000')) == [path]
    assert get_series(load_scalar_log(path), 'loss')[1] == [line['loss'] for line in TRAIN]


def test_missing_key_lists_the_available_ones(work_dir):
    log = load_scalar_log(work_dir)
    with pytest.raises(KeyError) as e:
        get_series(log, 'loss_dice')
    msg = e.value.args[0]
    assert "'loss_dice'" in msg and 'decode.loss_ce' in msg and 'ris/oIoU' in msg
    with pytest.raises(KeyError, match='is a validation key: plot it with --val-keys'):
        get_series(log, 'ris/oIoU', 'train')
    with pytest.raises(KeyError, match='is a training key: plot it with --keys'):
        get_series(log, 'loss', 'val')


def test_resumed_run_is_merged_later_run_wins(tmp_path):
    # killed after logging iterations 1..5, resumed from the checkpoint of iteration 3
    first = [dict(loss=float(i), iter=i, step=i) for i in range(1, 6)]
    second = [dict(loss=100.0 + i, iter=i, step=i) for i in range(4, 9)]
    _write(tmp_path / 'w' / '20250101_000000' / 'vis_data' / 'scalars.json', first)
    _write(tmp_path / 'w' / '20250101_010000' / 'vis_data' / 'scalars.json', second)
    log = load_scalar_log(str(tmp_path / 'w'))
    assert len(log.files) == 2 and log.files[0] < log.files[1]
    assert get_series(log, 'loss') == ([1, 2, 3, 4, 5, 6, 7, 8],
                                       [1.0, 2.0, 3.0, 104.0, 105.0, 106.0, 107.0, 108.0])


def test_epoch_based_validation_step(tmp_path):
    lines = [dict(loss=1.0, epoch=e, iter=i, step=i) for e, i in ((1, 10), (1, 20), (2, 30), (2, 40))]
    lines += [{'ris/oIoU': 5.0, 'step': 1}, {'ris/oIoU': 6.0, 'step': 2}]
    log = load_scalar_log(_write(tmp_path / 's.json', lines))
    assert log.val_step_unit() == 'epoch'
    assert get_series(log, 'ris/oIoU', 'val') == ([1, 2], [5.0, 6.0])


def test_bad_files_are_named(tmp_path):
    bad = tmp_path / 'bad.json'
    bad.write_text('{"loss": 1.0, "iter": 1, "step": 1}\n{"loss": \n')
    with pytest.raises(ValueError, match=r'bad\.json:2: not a JSON line'):
        load_scalar_log(str(bad))
    bad.write_text('{"loss": 1.0}\n')
    with pytest.raises(ValueError, match=r'bad\.json:1: .*found keys \[\'loss\'\]'):
        load_scalar_log(str(bad))
    bad.write_text('{"loss": "x", "iter": 1, "step": 1}\n')
    with pytest.raises(ValueError, match='not a number'):
        get_series(load_scalar_log(str(bad)), 'loss')
    with pytest.raises(FileNotFoundError, match='no \\*/vis_data/scalars.json'):
        find_scalar_files(str(tmp_path))
    with pytest.raises(FileNotFoundError, match='neither'):
        find_scalar_files(str(tmp_path / 'nope'))


def test_summarize_series_hand_computed():
    s = summarize_series([1, 2, 3, 4], [0.5, float('nan'), 0.25, 0.75])
    assert s['points'] == 4 and s['first'] == 0.5 and s['last'] == 0.75
    assert (s['min'], s['min_step'], s['max'], s['max_step']) == (0.25, 3, 0.75, 4)
    assert math.isnan(summarize_series([1], [float('nan')])['first'])


def test_plot_writes_a_png_of_the_figure_size(work_dir, tmp_path):
    log = load_scalar_log(work_dir)
    out = str(tmp_path / 'curves.png')
    summary = plot_curves({'run': log}, out, keys=['loss', 'decode.loss_ce'], val_keys=['ris/oIoU'],
                          title='tiny', dpi=50)
    assert os.path.getsize(out) > 0
    with Image.open(out) as im:
        assert im.format == 'PNG'
        assert im.size == (8 * 50, 3 * 3 * 50)  # figsize (8, 3 per panel) at 50 dpi
        assert len(np.unique(np.asarray(im.convert('L')))) > 2  # something was drawn
    assert summary['train:loss']['run']['last'] == TRAIN[-1]['loss']
    assert summary['val:ris/oIoU']['run']['max'] == 30.25
    # a missing key fails before anything is written
    out2 = str(tmp_path / 'none.png')
    with pytest.raises(KeyError, match='available|training keys'):
        plot_curves({'run': log}, out2, keys=['loss', 'nope'])
    assert not os.path.exists(out2)
    with pytest.raises(ValueError, match='nothing to plot'):
        plot_curves({'run': log}, out2, keys=[], val_keys=[])
