"""Render predictions next to the ground truth with the expression, during val/test."""
import os
import os.path as osp
from typing import Optional, Sequence

import mmcv
import numpy as np
from mmengine.hooks import Hook
from mmengine.runner import Runner

from mmseg.registry import HOOKS
from mmseg.structures import SegDataSample
from ...visualization import draw_ris_overlay


def sample_iou(pred: np.ndarray, gt: np.ndarray, ignore_index: int = 255) -> Optional[float]:
    """IoU of two binary masks over non-ignored pixels (None when the union is empty)."""
    valid = gt != ignore_index
    p, g = (pred == 1) & valid, (gt == 1) & valid
    union = int((p | g).sum())
    return None if union == 0 else int((p & g).sum()) / union


def render_sample(sample: SegDataSample) -> np.ndarray:
    """Prediction (filled) and ground truth (green outline) on the image, expression and IoU below."""
    meta = sample.metainfo
    pred = sample.pred_sem_seg.data[0].cpu().numpy()
    img = mmcv.imread(meta['img_path'])
    if img.shape[:2] != pred.shape:
        img = mmcv.imresize(img, (pred.shape[1], pred.shape[0]))
    gt = None
    caption = [str(meta[k]) for k in ('expr_type', ) if meta.get(k)]
    if 'gt_sem_seg' in sample:
        gt_full = sample.gt_sem_seg.data[0].cpu().numpy()
        if gt_full.shape == pred.shape:
            gt = gt_full == 1
            iou = sample_iou(pred, gt_full)
            caption.append('IoU n/a (empty)' if iou is None else f'IoU {iou:.2f}')
    caption.append(f'ref {meta.get("ref_id")} sent {meta.get("sent_id")}')
    return draw_ris_overlay(img, pred == 1, meta.get('text', ''), gt_mask=gt, caption='  '.join(caption))


@HOOKS.register_module()
class RISVisualizationHook(Hook):
    """Write prediction-vs-ground-truth renders with the expression and the sample's IoU.

    ``tools/test.py --show-dir DIR`` switches it on for testing (every ``interval``-th sample); during
    validation it draws only when ``draw=True``.

    Args:
        draw (bool): Whether to render at all. ``--show-dir`` / ``--show`` set it.
        interval (int): Render every ``interval``-th sample.
        show (bool): Also display the render in a window (needs a screen).
        wait_time (float): Seconds a shown window stays open.
        show_dir (str, optional): Output folder; relative paths are joined to the run's work dir.
            Defaults to ``{work_dir}/{timestamp}/vis``.
    """
    priority = 'NORMAL'

    def __init__(self,
                 draw: bool = False,
                 interval: int = 1,
                 show: bool = False,
                 wait_time: float = 0.,
                 show_dir: Optional[str] = None):
        if interval < 1:
            raise ValueError(f'RISVisualizationHook: interval must be >= 1, got {interval}')
        self.draw = draw or show
        self.interval = interval
        self.show = show
        self.wait_time = wait_time
        self.show_dir = show_dir
        self._count = 0

    def _out_dir(self, runner: Runner) -> str:
        out = self.show_dir or osp.join(runner.timestamp, 'vis')
        return out if osp.isabs(out) else osp.join(runner.work_dir, out)

    def _process(self, runner: Runner, outputs: Sequence[SegDataSample], split: str) -> None:
        if not self.draw:
            return
        out_dir = osp.join(self._out_dir(runner), split)
        for sample in outputs:
            if self._count % self.interval == 0:
                vis = render_sample(sample)
                meta = sample.metainfo
                name = f'{meta.get("ref_id", "x")}_{meta.get("sent_id", self._count)}.png'
                os.makedirs(out_dir, exist_ok=True)
                mmcv.imwrite(vis, osp.join(out_dir, name))
                if self.show:
                    mmcv.imshow(vis, win_name='mmseg_ris', wait_time=int(self.wait_time * 1000))
            self._count += 1

    def before_val_epoch(self, runner: Runner) -> None:
        self._count = 0

    def before_test_epoch(self, runner: Runner) -> None:
        self._count = 0

    def after_val_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        self._process(runner, outputs or [], 'val')

    def after_test_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        self._process(runner, outputs or [], 'test')
