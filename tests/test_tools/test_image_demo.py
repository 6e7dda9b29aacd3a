"""``demo/image_demo.py`` run as a subprocess on the tiny LAVT with a saved checkpoint.

Its printed areas and scores and its overlays are checked against ``RISInferencer`` run in this
process on the same image, config and checkpoint. The subprocess runs one intra-op thread
(``tool_env``) while this process may run several, so logits can differ in the last bits: areas may
differ by a pixel on the decision boundary and scores by rounding.
"""
import copy
import os.path as osp
import re
import sys

import mmcv
import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.runner.checkpoint import save_checkpoint, weights_to_cpu
from mmseg.registry import MODELS
from PIL import Image
from tiny_configs import REPO_ROOT, finish_tool, start_tool, stop_tools, write_tiny_train_config

from mmseg_ris.apis import RISInferencer

DEMO = osp.join(REPO_ROOT, 'demo', 'image_demo.py')
TEXTS = ['the green square', 'the shape at the top right', 'left circle']
# "[0] "the green square": mask area 123 px (3.5% of 70x50), score 0.6123"
LINE = re.compile(r'\[(\d+)\] "(.*)": mask area (\d+) px \(.*\), score ([0-9.]+)')


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('image_demo')
    cfg_path = write_tiny_train_config(str(tmp / 'tiny.py'), data_root=str(tmp / 'unused'))
    init_default_scope('mmseg')
    torch.manual_seed(1)
    model = MODELS.build(copy.deepcopy(Config.fromfile(cfg_path).model))
    ckpt = str(tmp / 'tiny.pth')
    save_checkpoint({'meta': {'iter': 0}, 'state_dict': weights_to_cpu(model.state_dict())}, ckpt)
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (50, 70, 3), dtype=np.uint8)
    img[10:30, 40:65] = (40, 200, 40)
    img_path = str(tmp / 'scene.jpg')
    mmcv.imwrite(img, img_path)
    yield {'tmp': tmp, 'cfg_path': cfg_path, 'ckpt': ckpt, 'img_path': img_path}
    stop_tools()


def parse(log):
    found = {int(k): (text, int(area), float(score)) for k, text, area, score in LINE.findall(log)}
    return [found[k] for k in sorted(found)]


def test_image_demo_writes_overlays_and_prints_area_and_score(setup):
    tmp = setup['tmp']
    common = [setup['img_path'], TEXTS[0], setup['cfg_path'], setup['ckpt']]
    many_log, one_log = str(tmp / 'many.log'), str(tmp / 'one.log')
    # both at once: two cores
    many = start_tool([sys.executable, DEMO, *common, '--text', TEXTS[1], '--text', TEXTS[2],
                       '--out-file', str(tmp / 'out' / 'many.png'), '--device', 'cpu'], many_log)
    one = start_tool([sys.executable, DEMO, *common, '--out-file', str(tmp / 'one.png'),
                      '--device', 'cpu'], one_log)
    many_out, one_out = finish_tool(many, many_log), finish_tool(one, one_log)

    expected = RISInferencer(setup['cfg_path'], weights=setup['ckpt'], device='cpu')(
        setup['img_path'], texts=TEXTS, return_vis=True)
    printed = parse(many_out)
    assert [p[0] for p in printed] == TEXTS
    assert parse(one_out)[0][0] == TEXTS[0]
    assert parse(one_out)[0][1:] == printed[0][1:]
    files = [str(tmp / 'out' / f'many_{k}.png') for k in range(3)]
    for (text, area, score), pred, render, path in zip(printed, expected['predictions'],
                                                      expected['visualization'], files):
        assert abs(area - int(pred['mask'].sum())) <= 2, text
        assert score == pytest.approx(pred['score'], abs=1e-3), text
        assert f'overlay written to {path}' in many_out
        written = np.asarray(Image.open(path).convert('RGB'))
        assert written.shape == render.shape
        assert (written == render).all(axis=-1).mean() > 0.99
    assert osp.isfile(tmp / 'one.png') and not osp.exists(tmp / 'one_0.png')
    # a mask that is neither empty nor full, or the comparison would prove little
    assert any(0 < area < 50 * 70 for _, area, _ in printed), printed
