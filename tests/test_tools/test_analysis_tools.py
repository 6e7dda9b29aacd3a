"""The analysis tools end to end: render_worst.py, get_flops.py and analyze_logs.py.

* Worst-N: predictions with known IoUs (empty, exact, half, grown) are scored by the real RISMetric,
  which writes ``per_sentence.jsonl`` and the PNGs as ``tools/test.py --out`` does; the tool must rank,
  name and render them as documented and refuse results that do not fit the config.
* FLOPs: the CLI on the tiny MagNet config (it has an auxiliary head) against a model built here.
* Curves: a real tiny training with validation writes ``scalars.json``; the CLI plots it.
"""
import importlib.util
import json
import os
import os.path as osp
import shutil
import string
import subprocess
import sys
from fractions import Fraction
from types import SimpleNamespace

import mmcv
import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.structures import PixelData
from PIL import Image

import mmseg_ris  # noqa: F401
from mmseg_ris.datasets import generate_synthetic_refcoco
from mmseg_ris.evaluation import RISMetric
from mmseg_ris.utils.benchmark import (build_benchmark_model, count_parameters,
                                       prepare_benchmark_config, set_input_size)
from mmseg_ris.visualization import draw_ris_overlay, rank_worst
from mmseg_ris.visualization.worst import build_test_dataset
from tiny_configs import REPO_ROOT, finish_tool, start_tool, tool_env, write_tiny_train_config

TOOLS = osp.join(REPO_ROOT, 'tools', 'analysis_tools')
FAKE_EMPTY = (900000, 1)      # positive sentence with empty ground truth and empty prediction
FAKE_NEGATIVE = (900001, 2)   # R-RefCOCO negative (exist=False)


def _tool(name):
    spec = importlib.util.spec_from_file_location(f'_tool_{name}', osp.join(TOOLS, f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _prediction(i, gt):
    """Four kinds of prediction with different IoUs."""
    kind = i % 4
    if kind == 0:
        return np.zeros_like(gt)                      # IoU 0
    if kind == 1:
        return gt.copy()                              # IoU 1
    pred = gt.copy()
    if kind == 2:                                     # bottom half of the referent missing
        rows = np.where(gt.any(1))[0]
        pred[rows[len(rows) // 2]:] = 0
    else:                                             # a false-positive block
        pred[:10, :10] = 1
    return pred


def _score(samples, preds, out_dir, keep_results=True, extra=True):
    """Run the real RISMetric as tools/test.py --out does; return the records' expected I and U."""
    metric = RISMetric(eval_resolution='input', output_dir=out_dir, keep_results=keep_results)
    for ds, pred in zip(samples, preds):
        d = ds.clone()
        d.pred_sem_seg = PixelData(data=torch.from_numpy(pred.astype(np.int64))[None])
        metric.process({}, [d.to_dict()])
    if extra:
        for (ref, sent), exist in ((FAKE_EMPTY, True), (FAKE_NEGATIVE, False)):
            d = samples[0].clone()
            d.set_metainfo(dict(ref_id=ref, sent_id=sent, exist=exist))
            zeros = torch.zeros_like(d.gt_sem_seg.data)
            d.gt_sem_seg = PixelData(data=zeros)
            d.pred_sem_seg = PixelData(data=zeros if exist else zeros + 1)
            metric.process({}, [d.to_dict()])
    metric.evaluate(len(metric.results))


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp('analysis_tools')
    data_root = str(root / 'synthetic')
    generate_synthetic_refcoco(data_root, num_images=12, seed=0)
    cfg_path = write_tiny_train_config(str(root / 'tiny.py'), data_root, max_iters=4,
                                       checkpoint_interval=4, warmup_iters=1, test_split='val')
    cfg = Config.fromfile(cfg_path)
    dataset = build_test_dataset(cfg)
    samples = [dataset[i]['data_samples'] for i in range(len(dataset))]
    gts = [s.gt_sem_seg.data[0].numpy() for s in samples]
    preds = [_prediction(i, gt) for i, gt in enumerate(gts)]
    results = str(root / 'results')
    _score(samples, preds, results)
    expected = []
    for s, gt, pred in zip(samples, gts, preds):
        inter = int(((pred == 1) & (gt == 1)).sum())
        union = int(((pred == 1) | (gt == 1)).sum())
        expected.append(dict(ref_id=s.ref_id, sent_id=s.sent_id, I=inter, U=union, text=s.text,
                             group=s.expr_type, img_path=s.img_path, pred=pred == 1, gt=gt == 1))
    # the documented order: IoU, then more wrong pixels first, then the ids
    expected.sort(key=lambda e: (Fraction(e['I'], e['U']), e['I'] - e['U'], e['ref_id'],
                                 e['sent_id']))
    return SimpleNamespace(root=root, data_root=data_root, cfg_path=cfg_path, samples=samples,
                           preds=preds, results=results, expected=expected)


# ------------------------------------------------------------------------------------------ worst-N
def test_rank_worst_order_and_what_is_not_ranked():
    def rec(ref, i, u, group='a', exist=True):
        return dict(ref_id=ref, sent_id=ref * 10, exist=exist, group=group, I=i, U=u)

    records = [rec(1, 5, 10), rec(2, 0, 50, 'b'), rec(3, 0, 80), rec(4, 2, 4), rec(5, 0, 0, 'b'),
               rec(6, 0, 30, None, exist=False), rec(10, 1, 3), rec(9, 1, 3)]
    ranked, summary = rank_worst(records)
    # IoU 0 (80 wrong pixels before 50), 1/3 (ids numerically: 9 before 10), 1/2 (5 wrong before 2)
    assert [r['ref_id'] for r in ranked] == [3, 2, 9, 10, 1, 4]
    assert [r['rank'] for r in ranked] == list(range(6))
    assert ranked[2]['IoU'] == pytest.approx(1 / 3)
    assert summary == dict(sentences=8, negatives=1, not_in_group=0, empty_union=1, ranked=6,
                           selected=6, group=None)
    ranked, summary = rank_worst(records, num=3, group='a')
    assert [r['ref_id'] for r in ranked] == [3, 9, 10]
    assert (summary['not_in_group'], summary['empty_union'], summary['ranked']) == (2, 0, 5)
    with pytest.raises(ValueError, match=r"groups in the results: \['a', 'b'\]"):
        rank_worst(records, group='relational')
    with pytest.raises(ValueError, match='num must be >= 1'):
        rank_worst(records, num=0)


def test_render_worst_cli(setup, tmp_path):
    out = str(tmp_path / 'worst')
    result = _tool('render_worst').main([setup.cfg_path, setup.results, '--num', '3', '--out-dir',
                                         out, '--no-progress'])
    n = len(setup.samples)
    assert (result['sentences'], result['negatives'], result['empty_union'], result['ranked']) == (
        n + 2, 1, 1, n)
    want = setup.expected[:3]
    names = [f'{k:03d}_iou{e["I"] / e["U"]:.2f}_{e["ref_id"]}_{e["sent_id"]}.png'
             for k, e in enumerate(want)]
    assert sorted(os.listdir(out)) == sorted(names + ['worst.jsonl'])
    with open(osp.join(out, 'worst.jsonl')) as f:
        index = [json.loads(line) for line in f]
    assert [e['file'] for e in index] == names
    for e, w in zip(index, want):
        assert (e['ref_id'], e['sent_id'], e['I'], e['U'], e['text'], e['group']) == (
            w['ref_id'], w['sent_id'], w['I'], w['U'], w['text'], w['group'])
        assert e['IoU'] == pytest.approx(w['I'] / w['U'])
    # the picture part of each render is the shared overlay of this image, prediction and GT
    for name, w in zip(names, want):
        vis = mmcv.imread(osp.join(out, name))
        img = mmcv.imresize(mmcv.imread(w['img_path']), w['gt'].shape[::-1])
        ref = draw_ris_overlay(img, w['pred'], '', gt_mask=w['gt'])
        # 64 px enlarged 5x to the 320 px minimum width; the caption strip follows
        assert vis.shape[1] == ref.shape[1] == 320 and vis.shape[0] > 320
        np.testing.assert_array_equal(vis[:320], ref[:320])


def test_render_worst_one_group(setup, tmp_path):
    group = setup.expected[0]['group']
    result = _tool('render_worst').main([setup.cfg_path, setup.results, '--num', '20', '--group',
                                         group, '--out-dir', str(tmp_path), '--no-progress'])
    want = [e for e in setup.expected if e['group'] == group]
    assert [(e['ref_id'], e['sent_id']) for e in result['rendered']] == [
        (e['ref_id'], e['sent_id']) for e in want]
    with pytest.raises(SystemExit, match='no sentence of group'):
        _tool('render_worst').main([setup.cfg_path, setup.results, '--group', 'nope',
                                    '--out-dir', str(tmp_path), '--no-progress'])


def test_render_worst_without_prediction_pngs(setup, tmp_path):
    no_masks = str(tmp_path / 'no_masks')
    _score(setup.samples, setup.preds, no_masks, keep_results=False, extra=False)
    assert not any(n.endswith('.png') for n in os.listdir(no_masks))
    with pytest.raises(SystemExit) as e:
        _tool('render_worst').main([setup.cfg_path, no_masks, '--no-progress'])
    msg = str(e.value)
    assert 'names no prediction mask' in msg and 'keep_results=True' in msg and '--out DIR' in msg
    # a deleted PNG
    copy = str(tmp_path / 'deleted')
    shutil.copytree(setup.results, copy)
    worst = setup.expected[0]
    os.remove(osp.join(copy, f'{worst["ref_id"]}_{worst["sent_id"]}.png'))
    with pytest.raises(SystemExit, match='prediction PNG\\(s\\) missing'):
        _tool('render_worst').main([setup.cfg_path, copy, '--num', '1', '--no-progress'])
    with pytest.raises(SystemExit, match='per_sentence.jsonl not found'):
        _tool('render_worst').main([setup.cfg_path, str(tmp_path), '--no-progress'])


def test_render_worst_refuses_results_of_another_run(setup, tmp_path):
    # another split: the sentences are not in the config's dataset
    with pytest.raises(SystemExit, match="not in the config's test dataset"):
        _tool('render_worst').main([setup.cfg_path, setup.results, '--num', '1', '--out-dir',
                                    str(tmp_path), '--no-progress', '--cfg-options',
                                    'test_dataloader.dataset.split=testA'])
    # a prediction that is not the one scored
    copy = str(tmp_path / 'tampered')
    shutil.copytree(setup.results, copy)
    worst = setup.expected[0]
    png = osp.join(copy, f'{worst["ref_id"]}_{worst["sent_id"]}.png')
    Image.fromarray(np.full(worst['gt'].shape, 255, np.uint8)).save(png)
    with pytest.raises(SystemExit, match='the run recorded'):
        _tool('render_worst').main([setup.cfg_path, copy, '--num', '1', '--out-dir',
                                    str(tmp_path / 'o'), '--no-progress'])


# -------------------------------------------------------------------------------------------- FLOPs
def test_get_flops_cli_on_tiny_magnet(tmp_path, capsys):
    config = osp.join(REPO_ROOT, 'configs', 'magnet', 'magnet_tiny_synthetic.py')
    out = str(tmp_path / 'flops.json')
    _tool('get_flops').main([config, '--shape', '64', '--num-tokens', '12', '--out', out])
    printed = capsys.readouterr().out
    with open(out) as f:
        report = json.load(f)
    cfg = Config.fromfile(config)
    prepare_benchmark_config(cfg)
    set_input_size(cfg, (64, 64))
    model = build_benchmark_model(cfg, 'cpu')
    assert report['params'] == count_parameters(model)
    assert report['params']['total'] == sum(p.numel() for p in model.parameters())
    assert report['input'] == dict(image=[1, 3, 64, 64], num_tokens=12)
    parts = {r['name']: r for r in report['parts']}
    assert set(parts) == {'backbone (rest)', 'backbone.text_encoder', 'backbone.fusions',
                          'decode_head', 'auxiliary_head'}
    # Mask Grounding trains only: parameters, no inference FLOPs, reported as unused
    assert parts['auxiliary_head']['flops'] == 0
    assert parts['auxiliary_head']['params'] == sum(p.numel() for p in model.auxiliary_head.parameters())
    assert 'auxiliary_head' in report['unused_parameters']
    assert sum(r['flops'] for r in report['parts']) == report['flops'] > 0
    assert 'auxiliary_head' in printed and 'operators skipped' in printed
    with pytest.raises(SystemExit):
        _tool('get_flops').parse_args([config, '--shape', '1', '2', '3'])
    with pytest.raises(SystemExit, match='does not exist'):
        _tool('get_flops').main([str(tmp_path / 'nope.py')])


# ------------------------------------------------------------------------------------------- curves
def test_analyze_logs_on_a_real_training_run(setup, tmp_path):
    cfg_path = str(tmp_path / 'tiny_val.py')
    with open(setup.cfg_path) as f:
        text = f.read()
    # validation every 2 iterations on the test split
    text += ('\nval_dataloader = test_dataloader\nval_evaluator = test_evaluator\n'
             "val_cfg = dict(type='ValLoop')\n"
             "train_cfg = dict(type='IterBasedTrainLoop', max_iters=4, val_interval=2)\n")
    with open(cfg_path, 'w') as f:
        f.write(text)
    work = tmp_path / 'work'
    finish_tool(start_tool([sys.executable, osp.join(REPO_ROOT, 'tools', 'train.py'), cfg_path,
                            '--work-dir', work], tmp_path / 'train.log'), tmp_path / 'train.log')
    (scalars, ) = work.glob('*/vis_data/scalars.json')
    lines = [json.loads(line) for line in scalars.read_text().splitlines()]
    train = [line for line in lines if 'iter' in line]
    val = [line for line in lines if 'iter' not in line]
    assert [line['iter'] for line in train] == [1, 2, 3, 4]
    assert [line['step'] for line in val] == [2, 4] and 'ris/oIoU' in val[0]

    out = tmp_path / 'curves.png'
    cmd = [sys.executable, osp.join(TOOLS, 'analyze_logs.py'), str(work), '--keys', 'loss',
           'decode.loss_ce', '--val-keys', 'ris/oIoU', '--out', str(out)]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=tool_env(), capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert out.stat().st_size > 0 and Image.open(out).format == 'PNG'
    assert f'last {train[-1]["loss"]:.6g}' in proc.stdout
    assert f'val   ris/oIoU: 2 points, first {val[0]["ris/oIoU"]:.6g}' in proc.stdout

    with pytest.raises(SystemExit) as e:
        _tool('analyze_logs').main([str(work), '--keys', 'loss_dice', '--out',
                                    str(tmp_path / 'x.png')])
    assert "'loss_dice' is not in the log" in str(e.value) and 'decode.loss_ce' in str(e.value)
    assert not (tmp_path / 'x.png').exists()


# ---------------------------------------------------------------------------------- word breakdown
def test_word_breakdown_cli(setup, tmp_path, capsys):
    results = str(tmp_path / 'results')
    _score(setup.samples, setup.preds, results, keep_results=False, extra=False)
    out = str(tmp_path / 'wb.json')
    result = _tool('word_breakdown').main([setup.cfg_path, results, '--min-count', '1', '--out', out])
    with open(out) as f:
        written = json.load(f)
    assert written['by_word'] == result['by_word'] and written['by_kinds'] == result['by_kinds']
    # independently: every word's oIoU from the ground truth / predictions made in the fixture
    words = {}
    for e in setup.expected:
        text = ''.join(' ' if c in string.punctuation else c for c in e['text'].lower())
        for w in set(text.split()):
            words.setdefault(w, []).append(e)
    by_word = {r['word']: r for r in result['by_word']}
    assert set(by_word) == set(words)
    for w, es in words.items():
        assert by_word[w]['sentences'] == len(es)
        assert by_word[w]['oIoU'] == pytest.approx(
            100 * sum(e['I'] for e in es) / sum(e['U'] for e in es))
    assert sum(r['sentences'] for r in result['by_kinds']) == len(setup.expected)
    assert 'lowest oIoU first' in capsys.readouterr().out

    group = setup.expected[0]['group']
    kinds = _tool('word_breakdown').main([setup.cfg_path, results, '--group', group, '--out', out,
                                          '--word-kinds', 'colour=red,blue', 'rest=the'])
    assert {r['kinds'] for r in kinds['by_kinds']} <= {'(none)', 'colour', 'rest', 'colour+rest'}
    assert sum(r['sentences'] for r in kinds['by_kinds']) == sum(
        e['group'] == group for e in setup.expected)
    with pytest.raises(SystemExit):
        _tool('word_breakdown').main([setup.cfg_path, results, '--word-kinds', 'colour'])
    with pytest.raises(SystemExit, match='no sentence text'):  # results of another split
        _tool('word_breakdown').main([setup.cfg_path, results, '--out', out, '--cfg-options',
                                      'test_dataloader.dataset.split=testA'])
