"""RISVisualizationHook renders prediction vs ground truth with the expression and the sample's IoU."""
import os.path as osp
from types import SimpleNamespace

import mmcv
import numpy as np
import pytest
import torch
from mmengine.structures import PixelData

import mmseg_ris  # noqa: F401
from mmseg.registry import HOOKS
from mmseg.structures import SegDataSample
from mmseg_ris.engine.hooks import render_sample, sample_iou
from mmseg_ris.visualization import draw_ris_overlay


def _sample(img_path, pred, gt, text='the red square', ref_id=7, sent_id=11):
    s = SegDataSample(metainfo=dict(img_path=img_path, text=text, ref_id=ref_id, sent_id=sent_id,
                                    expr_type='attribute'))
    s.pred_sem_seg = PixelData(data=torch.from_numpy(pred)[None].long())
    s.gt_sem_seg = PixelData(data=torch.from_numpy(gt)[None].long())
    return s


def test_sample_iou_hand_computed():
    pred = np.zeros((4, 4), np.int64)
    gt = np.zeros((4, 4), np.int64)
    pred[0, :3] = 1          # 3 predicted pixels
    gt[0, 1:4] = 1           # 3 gt pixels, 2 shared -> I=2, U=4
    assert sample_iou(pred, gt) == pytest.approx(0.5)
    gt[0, 3] = 255           # ignored pixel leaves the union: I=2, U=3
    assert sample_iou(pred, gt) == pytest.approx(2 / 3)
    assert sample_iou(np.zeros_like(pred), np.zeros_like(gt)) is None


def test_overlay_marks_mask_and_dims_background():
    img = np.full((40, 50, 3), 200, np.uint8)
    mask = np.zeros((40, 50), bool)
    mask[10:20, 10:30] = True
    vis = draw_ris_overlay(img, mask, 'the big blue box', min_width=50)
    assert vis.shape[1] == 50 and vis.shape[0] > 40          # caption strip added below
    inside, outside = vis[15, 20].astype(int), vis[30, 40].astype(int)
    assert outside.max() < 200 * 0.5 + 1                     # background dimmed
    assert inside[2] > inside[0]                             # tinted towards red (BGR)
    with pytest.raises(ValueError, match='mask'):
        draw_ris_overlay(img, mask[:10], 'x')


def test_hook_writes_renders_with_iou(tmp_path):
    img_path = str(tmp_path / 'img.png')
    mmcv.imwrite(np.full((16, 24, 3), 128, np.uint8), img_path)
    pred = np.zeros((16, 24), np.int64)
    gt = np.zeros((16, 24), np.int64)
    pred[2:6, 2:6] = 1
    gt[2:6, 4:8] = 1
    samples = [_sample(img_path, pred, gt, ref_id=1, sent_id=i) for i in range(5)]

    hook = HOOKS.build(dict(type='RISVisualizationHook', draw=True, interval=2,
                            show_dir=str(tmp_path / 'vis')))
    runner = SimpleNamespace(work_dir=str(tmp_path), timestamp='t')
    hook.before_test_epoch(runner)
    hook.after_test_iter(runner, 0, None, samples[:3])
    hook.after_test_iter(runner, 1, None, samples[3:])
    written = sorted(p.name for p in (tmp_path / 'vis' / 'test').iterdir())
    assert written == ['1_0.png', '1_2.png', '1_4.png']     # every 2nd sample
    vis = mmcv.imread(str(tmp_path / 'vis' / 'test' / '1_0.png'))
    assert vis.shape[1] >= 24 and vis.shape[0] > 16

    # nothing is drawn unless asked (validation during training)
    quiet = HOOKS.build(dict(type='RISVisualizationHook', show_dir=str(tmp_path / 'quiet')))
    quiet.after_val_iter(runner, 0, None, samples)
    assert not osp.exists(tmp_path / 'quiet')
    with pytest.raises(ValueError, match='interval'):
        HOOKS.build(dict(type='RISVisualizationHook', interval=0))


def test_render_sample_resizes_image_to_prediction(tmp_path):
    img_path = str(tmp_path / 'img.png')
    mmcv.imwrite(np.full((30, 45, 3), 90, np.uint8), img_path)
    pred = np.zeros((8, 8), np.int64)
    pred[:4] = 1
    vis = render_sample(_sample(img_path, pred, pred.copy()))
    # 8x8 prediction enlarged to >= 320 px wide, caption below
    assert vis.shape[1] == 320 and vis.shape[0] > 320
