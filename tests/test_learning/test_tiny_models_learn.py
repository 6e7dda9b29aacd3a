"""The tiny LAVT and the tiny MagNet learn the synthetic set: trained through tools/train.py and scored
through tools/test.py, their val oIoU is far above what predicting nothing or everything scores on the
same data.
"""
import json
import os
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest
from pycocotools import mask as mask_utils

import mmseg_ris  # noqa: F401
from mmseg_ris.datasets import generate_synthetic_refcoco
from mmseg_ris.datasets.refer import ReferAnnotations

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
SCALE = 128  # the configs' input size
# config, iterations, extra options: the MagNet run is shorter and at batch 8 (each of its iterations
# costs about three of the tiny LAVT's on a CPU)
CASES = {
    'lavt': (osp.join(REPO, 'configs', 'lavt', 'lavt_tiny_synthetic.py'), 400, []),
    'magnet': (osp.join(REPO, 'configs', 'magnet', 'magnet_tiny_synthetic.py'), 250,
               ['train_dataloader.batch_size=8', 'param_scheduler.0.end=25', 'param_scheduler.1.begin=25']),
}


def _trivial_baselines(data_root: str) -> dict:
    """oIoU (percent) of 'predict nothing' and 'predict everything' on val, at the input size.

    Computed from the annotation files alone (pycocotools rasterisation, nearest resize to the square
    input as the test pipeline does), independently of the model, the pipeline and the metric code.
    """
    import cv2
    refer = ReferAnnotations(data_root, 'refcoco', 'unc')
    total_gt, total_px = 0, 0
    for ref_id in refer.ref_ids('val'):
        ann_ids = refer.ref_ann_ids(ref_id)
        ann = refer.anns[ann_ids[0]]
        img = refer.imgs[ann['image_id']]
        h, w = img['height'], img['width']
        seg = ann['segmentation']
        rle = mask_utils.merge(mask_utils.frPyObjects(seg, h, w)) if isinstance(seg, list) else seg
        m = mask_utils.decode(rle)
        m = cv2.resize(m, (SCALE, SCALE), interpolation=cv2.INTER_NEAREST)
        n_sent = len(refer.ref_sentences(ref_id))
        total_gt += int(m.sum()) * n_sent
        total_px += SCALE * SCALE * n_sent
    # nothing: I = 0 everywhere; everything: I = |gt|, U = image area
    return dict(nothing=0.0, everything=100.0 * total_gt / total_px)


@pytest.fixture(scope='module')
def synthetic(tmp_path_factory):
    data = tmp_path_factory.mktemp('learn') / 'synthetic'
    generate_synthetic_refcoco(str(data), num_images=600, seed=3)
    return data


@pytest.mark.timeout(1800)  # generous: a loaded CI machine runs it 2-3x slower
@pytest.mark.parametrize('method', list(CASES))
def test_tiny_model_learns(tmp_path, synthetic, method):
    config, iters, extra = CASES[method]
    data = synthetic
    work = tmp_path / 'work'
    opts = [f'{k}.dataset.data_root={data}/' for k in ('train_dataloader', 'val_dataloader',
                                                        'test_dataloader')]
    opts += [
        f'train_cfg.max_iters={iters}',
        f'train_cfg.val_interval={iters}', f'param_scheduler.1.end={iters}',
        f'default_hooks.checkpoint.interval={iters}', 'train_dataloader.num_workers=1',
        'val_dataloader.num_workers=1', 'test_dataloader.num_workers=1',
        'train_dataloader.persistent_workers=False', 'val_dataloader.persistent_workers=False',
        'test_dataloader.persistent_workers=False', *extra
    ]
    env = dict(os.environ, PYTHONPATH=REPO)
    subprocess.run([sys.executable, 'tools/train.py', config, '--work-dir', str(work), '--cfg-options',
                    *opts], cwd=REPO, env=env, check=True, capture_output=True, text=True)
    ckpt = work / f'iter_{iters}.pth'
    assert ckpt.exists()
    out = tmp_path / 'eval'
    subprocess.run([sys.executable, 'tools/test.py', config, str(ckpt), '--work-dir', str(tmp_path / 'tw'),
                    '--out', str(out), '--cfg-options', *opts], cwd=REPO, env=env, check=True,
                   capture_output=True, text=True)
    res = json.load(open(out / 'results.json'))
    metrics = res['overall']
    oiou = float(metrics['oIoU'])
    base = _trivial_baselines(str(data))
    # Predicting everything scores the mean foreground fraction (a few percent on this set).
    assert base['everything'] < 12.0
    assert oiou > 2 * base['everything'] and oiou > 20.0, (oiou, base)
    # every val sentence was scored
    lines = (out / 'per_sentence.jsonl').read_text().strip().splitlines()
    assert len(lines) == int(metrics['num_sentences'])
    ious = np.array([json.loads(line)['IoU'] for line in lines], dtype=float)
    assert np.isclose(100 * ious.mean(), float(metrics['mIoU']), atol=0.01)
