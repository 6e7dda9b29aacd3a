"""MagNet ablation: variant configs switch exactly the named parts; summaries are right; the tool runs."""
import importlib.util
import json
import math
import os.path as osp

import pytest
from mmengine.config import Config

from mmseg_ris.datasets.synthetic import generate_synthetic_refcoco
from mmseg_ris.utils.ablation import (ABLATION_VARIANTS, markdown_table, mean_std, summarize,
                                      write_variant_config)
from tiny_configs import REPO_ROOT

MAGNET_TINY = osp.join(REPO_ROOT, 'configs', 'magnet', 'magnet_tiny_synthetic.py')


@pytest.mark.parametrize('name', list(ABLATION_VARIANTS))
def test_variant_configs_switch_exactly_the_named_parts(tmp_path, name):
    base = Config.fromfile(MAGNET_TINY).model
    cfg = Config.fromfile(write_variant_config(MAGNET_TINY, name, str(tmp_path))).model
    parts = ABLATION_VARIANTS[name]
    if parts['cam']:
        assert cfg.backbone.fusions == base.backbone.fusions
    else:
        assert dict(cfg.backbone.fusions) == dict(type='PWAM', num_heads=1)
    assert (cfg.decode_head.loss_cal is not None) == parts['cal']
    if parts['cal']:
        assert cfg.decode_head.loss_cal == base.decode_head.loss_cal
    assert (cfg.get('auxiliary_head') is not None) == parts['mg']
    # everything else is the base config's
    for key in ('data_preprocessor', 'type'):
        assert cfg[key] == base[key]
    same_backbone = {k: v for k, v in cfg.backbone.items() if k != 'fusions'}
    assert same_backbone == {k: v for k, v in base.backbone.items() if k != 'fusions'}
    head = {k: v for k, v in cfg.decode_head.items() if k != 'loss_cal'}
    assert head == {k: v for k, v in base.decode_head.items() if k != 'loss_cal'}


def test_unknown_variant(tmp_path):
    with pytest.raises(ValueError, match='unknown ablation variant'):
        write_variant_config(MAGNET_TINY, '+XYZ', str(tmp_path))


def test_summary_and_table_by_hand():
    runs = [dict(variant='baseline', seed=s, a=v) for s, v in enumerate([10.0, 12.0, 14.0])]
    runs += [dict(variant='+MG', seed=s, a=v) for s, v in enumerate([13.0, 15.0])]
    summary = summarize(runs, ['a'])
    assert list(summary) == ['baseline', '+MG']
    assert summary['baseline']['a'] == dict(mean=12.0, std=2.0, n=3)  # sample std of 10, 12, 14
    assert summary['+MG']['a']['mean'] == 14.0
    assert math.isclose(summary['+MG']['a']['std'], math.sqrt(2.0))
    table = markdown_table(summary, ['a'])
    assert '| baseline |  |  |  | 3 | 12.00 ± 2.00 |' in table
    assert '| +MG |  |  | ✓ | 2 | 14.00 ± 1.41 (+2.00) |' in table
    assert mean_std([5.0]) == dict(mean=5.0, std=0.0, n=1)
    with pytest.raises(ValueError):
        mean_std([])


def test_tool_runs_and_resumes(tmp_path):
    data = tmp_path / 'data'
    generate_synthetic_refcoco(str(data), 12, seed=3)
    spec = importlib.util.spec_from_file_location(
        'magnet_ablation', osp.join(REPO_ROOT, 'tools', 'analysis_tools', 'magnet_ablation.py'))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    work = tmp_path / 'work'
    argv = ['--data-root', str(data), '--variants', 'baseline', 'full', '--seeds', '0', '--iters', '3',
            '--batch-size', '2', '--work-dir', str(work), '--group', 'relational', '--cfg-options',
            'train_dataloader.num_workers=0', 'train_dataloader.persistent_workers=False',
            'val_dataloader.num_workers=0', 'val_dataloader.persistent_workers=False',
            'test_dataloader.num_workers=0', 'test_dataloader.persistent_workers=False',
            'val_dataloader.batch_size=4', 'test_dataloader.batch_size=4']
    report = tool.main(argv)
    assert [(r['variant'], r['seed']) for r in report['runs']] == [('baseline', 0), ('full', 0)]
    for r in report['runs']:
        run_dir = work / f"{r['variant'].replace('+', 'plus_').lower()}_seed0"
        res = json.loads((run_dir / 'eval' / 'results.json').read_text())
        assert r['relational oIoU'] == res['groups']['relational']['oIoU']
        assert r['oIoU'] == res['overall']['oIoU']
    assert (work / 'ablation.md').read_text().count('\n') == 4
    # finished runs are reused, not retrained
    stamp = (work / 'baseline_seed0' / 'run.json').stat().st_mtime
    again = tool.main(argv)
    assert again['runs'] == report['runs']
    assert (work / 'baseline_seed0' / 'run.json').stat().st_mtime == stamp
