"""Tests of ``RISInferencer`` on the tiny LAVT (tests/tiny_configs.py) with a saved checkpoint.

Expected masks and scores come from an independent run of the segmentor: the checkpoint loaded with
``torch.load`` + a strict ``load_state_dict``, the config's test pipeline without ``LoadRefMask``
applied to ``dict(img_path, text)``, ``test_step`` at ``output_size='original'``, and the score
recomputed from ``seg_logits`` by hand (softmax of the referent channel, mean over the mask).
"""
import copy
import os.path as osp

import mmcv
import numpy as np
import pytest
import torch
from mmcv.transforms import Compose
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.registry import init_default_scope
from mmengine.runner.checkpoint import save_checkpoint, weights_to_cpu
from mmseg.registry import MODELS
from PIL import Image
from tiny_configs import write_tiny_train_config

import mmseg_ris  # noqa: F401  (registers the modules and the checkpoint allow-list)
from mmseg_ris.apis import RISInferencer, foreground_probability

# non-square on purpose: the network input is 64 x 64
IMG_H, IMG_W = 50, 70
TEXTS = ['the red circle on the left', 'big blue square', 'the lowest object']


def make_image(height, width, seed):
    """A BGR image with a few flat shapes on noise (structure the random model reacts to)."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 60, (height, width, 3), dtype=np.uint8)
    for _ in range(3):
        y0, x0 = rng.integers(0, height // 2), rng.integers(0, width // 2)
        img[y0:y0 + height // 3, x0:x0 + width // 3] = rng.integers(80, 255, 3)
    return img


def build_model(cfg):
    init_default_scope('mmseg')
    model_cfg = copy.deepcopy(cfg.model)
    model_cfg['test_cfg'] = {'output_size': 'original'}
    return MODELS.build(model_cfg).eval()


def reference_pipeline(cfg):
    steps = [t for t in cfg.test_dataloader.dataset.pipeline if t['type'] != 'LoadRefMask']
    return Compose(copy.deepcopy(steps))


def reference_predict(model, pipeline, img_path, text):
    """Mask, score and referent probability of one pair through the segmentor's own test_step."""
    data = pipeline({'img_path': img_path, 'text': text})
    with torch.no_grad():
        sample = model.test_step(pseudo_collate([data]))[0]
    logits = sample.seg_logits.data
    assert logits.shape[0] == 2
    mask = (logits.argmax(dim=0) == 1).numpy()
    prob = torch.softmax(logits, dim=0)[1].numpy()
    score = float(prob[mask].mean()) if mask.any() else 0.0
    return mask, score, prob


def assert_same_mask_up_to_rounding(mask, expected, prob, eps=1e-4):
    """Masks equal except where the probability is within ``eps`` of the 0.5 decision boundary.

    Batches of several pairs run other matrix-multiplication kernels than single pairs, so logits
    may differ in the last bits and flip a pixel that sits exactly on the boundary; nothing else may
    differ.
    """
    differ = mask != expected
    assert not (differ & (np.abs(prob - 0.5) > eps)).any(), \
        f'{int(differ.sum())} pixels differ, some far from the decision boundary'
    assert differ.sum() <= max(1, mask.size // 1000)


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    """Tiny config, two images, a checkpoint whose masks are neither empty nor full."""
    tmp = tmp_path_factory.mktemp('ris_inferencer')
    cfg_path = write_tiny_train_config(str(tmp / 'tiny.py'), data_root=str(tmp / 'unused'))
    cfg = Config.fromfile(cfg_path)
    torch.manual_seed(0)
    model = build_model(cfg)
    images = []
    for i, (h, w) in enumerate([(IMG_H, IMG_W), (40, 36)]):
        path = str(tmp / f'img{i}.png')
        mmcv.imwrite(make_image(h, w, seed=i), path)
        images.append(path)
    # Shift the referent logit so that about half the pixels of the first pair are foreground:
    # a random model otherwise tends to predict all or nothing, which would make mask
    # comparisons vacuous.
    pipeline = reference_pipeline(cfg)
    data = pipeline({'img_path': images[0], 'text': TEXTS[0]})
    with torch.no_grad():
        logits = model.test_step(pseudo_collate([data]))[0].seg_logits.data
        margin = (logits[1] - logits[0]).median()
        model.decode_head.conv_seg.bias[1] -= margin
    ckpt = str(tmp / 'iter_1.pth')
    save_checkpoint({'meta': {'iter': 1, 'seed': np.int64(0)},
                         'state_dict': weights_to_cpu(model.state_dict())}, ckpt)
    reference = build_model(cfg)
    reference.load_state_dict(torch.load(ckpt, map_location='cpu', weights_only=True)['state_dict'],
                              strict=True)
    inferencer = RISInferencer(cfg_path, weights=ckpt, device='cpu')
    return {'tmp': tmp, 'cfg_path': cfg_path, 'cfg': cfg, 'ckpt': ckpt, 'images': images,
                'reference': reference, 'pipeline': pipeline, 'inferencer': inferencer}


def test_matches_test_step_at_original_size(setup):
    inferencer = setup['inferencer']
    # the tiny config scores at the network input; the inferencer must still answer at image size
    assert setup['cfg'].model.test_cfg.output_size == 'input'
    assert inferencer.missing_keys == [] and inferencer.unexpected_keys == []
    out = inferencer(setup['images'][0], texts=TEXTS)
    assert out['visualization'] == []
    assert [p['text'] for p in out['predictions']] == TEXTS
    nontrivial = 0
    for pred, text in zip(out['predictions'], TEXTS):
        assert pred['img_path'] == setup['images'][0]
        assert pred['mask'].dtype == bool and pred['mask'].shape == (IMG_H, IMG_W)
        mask, score, _ = reference_predict(setup['reference'], setup['pipeline'],
                                           setup['images'][0], text)
        np.testing.assert_array_equal(pred['mask'], mask)
        assert pred['score'] == pytest.approx(score, abs=1e-6)
        nontrivial += 0 < mask.sum() < mask.size
    assert nontrivial >= 1, 'every mask is empty or full: the comparison would prove little'


def test_path_and_array_give_identical_results(setup):
    inferencer = setup['inferencer']
    path = setup['images'][0]
    from_path = inferencer(path, texts=TEXTS[1])['predictions'][0]
    from_array = inferencer(mmcv.imread(path), texts=TEXTS[1])['predictions'][0]
    assert from_array['img_path'] is None and from_path['img_path'] == path
    assert from_array['mask'].shape == (IMG_H, IMG_W)
    np.testing.assert_array_equal(from_path['mask'], from_array['mask'])
    assert from_path['score'] == from_array['score']


def test_several_images_and_batch_sizes_agree(setup):
    inferencer = setup['inferencer']
    img0, img1 = setup['images']
    inputs = [{'img': img0, 'text': TEXTS[:2]}, {'img': mmcv.imread(img1), 'text': TEXTS[2]}]
    expected = [(img0, TEXTS[0]), (img0, TEXTS[1]), (None, TEXTS[2])]
    references = [reference_predict(setup['reference'], setup['pipeline'], path, text)
                  for path, text in [(img0, TEXTS[0]), (img0, TEXTS[1]), (img1, TEXTS[2])]]
    for batch_size in (1, 3, 2):
        preds = inferencer(inputs, batch_size=batch_size)['predictions']
        assert [(p['img_path'], p['text']) for p in preds] == expected
        assert preds[2]['mask'].shape == (40, 36)
        for pred, (mask, score, prob) in zip(preds, references):
            if batch_size == 1:  # the very computation of the reference
                np.testing.assert_array_equal(pred['mask'], mask)
            else:
                assert_same_mask_up_to_rounding(pred['mask'], mask, prob)
            assert pred['score'] == pytest.approx(score, abs=1e-4)


def test_out_dir_writes_renders_and_masks(setup, tmp_path):
    inferencer = setup['inferencer']
    img0, img1 = setup['images']
    array = mmcv.imread(img1)
    out = inferencer([{'img': img0, 'text': TEXTS[:2]}, {'img': array, 'text': TEXTS[2]}],
                     batch_size=2, out_dir=str(tmp_path))
    preds, vis = out['predictions'], out['visualization']
    assert len(vis) == 3
    names = ['img0_0.png', 'img0_1.png', 'array1_0.png']
    for pred, render, name in zip(preds, vis, names):
        assert pred['vis_path'] == osp.join(str(tmp_path), 'vis', name)
        assert pred['pred_path'] == osp.join(str(tmp_path), 'pred', name)
        saved = np.asarray(Image.open(pred['pred_path']))
        assert saved.shape == pred['mask'].shape
        assert set(np.unique(saved)) <= {0, 255}
        np.testing.assert_array_equal(saved == 255, pred['mask'])
        # the file holds the returned (RGB) render
        written = np.asarray(Image.open(pred['vis_path']).convert('RGB'))
        np.testing.assert_array_equal(written, render)
        assert render.dtype == np.uint8 and render.ndim == 3
        # the render is wider than the (enlarged) image and taller, for the caption
        assert render.shape[0] > render.shape[1] * pred['mask'].shape[0] / pred['mask'].shape[1]
    # return_vis alone renders without writing
    again = inferencer(img0, texts=TEXTS[0], return_vis=True, show_score=False)
    assert 'vis_path' not in again['predictions'][0]
    assert again['visualization'][0].shape[1] == vis[0].shape[1]


def test_empty_and_full_masks_score(setup):
    """Score 0 for an empty mask, the mean probability over the image for a full one.

    Also exercises a built module as ``model`` (its ``cfg`` gives the pipeline).
    """
    cfg = setup['cfg']
    model = build_model(cfg)
    model.cfg = cfg
    model.test_cfg['output_size'] = 'input'
    img = setup['images'][0]
    with torch.no_grad():
        model.decode_head.conv_seg.bias[:] = torch.tensor([0.0, -1e4])
    inferencer = RISInferencer(model, device='cpu')
    assert model.test_cfg['output_size'] == 'original'
    empty = inferencer(img, texts=TEXTS[0])['predictions'][0]
    assert not empty['mask'].any() and empty['score'] == 0.0
    with torch.no_grad():
        model.decode_head.conv_seg.bias[:] = torch.tensor([0.0, 50.0])
    full = inferencer(img, texts=TEXTS[0])['predictions'][0]
    assert full['mask'].all()
    mask, score, _ = reference_predict(model, setup['pipeline'], img, TEXTS[0])
    assert mask.all() and full['score'] == pytest.approx(score, abs=1e-6)


def test_foreground_probability_one_and_two_channels():
    logits = torch.tensor([[[0.0, 1.0]], [[0.0, -1.0]]])  # (2, 1, 2)
    np.testing.assert_allclose(foreground_probability(logits).numpy(),
                               [[0.5, 1 / (1 + np.exp(2.0))]], rtol=1e-6)
    # one-channel heads already store sigmoid probabilities
    probs = torch.tensor([[[0.2, 0.9]]])
    torch.testing.assert_close(foreground_probability(probs), probs[0])


def test_input_errors_name_the_argument(setup):
    inferencer = setup['inferencer']
    img0 = setup['images'][0]
    missing = str(setup['tmp'] / 'nope.jpg')
    with pytest.raises(FileNotFoundError, match=r"inputs: image file .*nope\.jpg"):
        inferencer(missing, texts='x')
    with pytest.raises(FileNotFoundError, match=r"inputs\[1\]\['img'\].*nope\.jpg"):
        inferencer([{'img': img0, 'text': 'x'}, {'img': missing, 'text': 'y'}])
    with pytest.raises(ValueError, match=r"texts\[1\]: empty referring expression"):
        inferencer(img0, texts=['a dog', '  '])
    with pytest.raises(ValueError, match=r"texts: empty referring expression"):
        inferencer(img0, texts='')
    with pytest.raises(ValueError, match=r"inputs\[0\]\['text'\]: no referring expression"):
        inferencer([{'img': img0}])
    with pytest.raises(ValueError, match='texts: no referring expression'):
        inferencer(img0)
    with pytest.raises(ValueError, match='texts: give texts only with a single image'):
        inferencer([{'img': img0, 'text': 'a'}], texts='b')
    with pytest.raises(ValueError, match=r'inputs: expected an \(H, W, 3\) uint8 BGR array'):
        inferencer(np.zeros((8, 8), np.uint8), texts='x')
    with pytest.raises(ValueError, match=r"inputs\[0\]\['img'\]: expected .* dtype float32"):
        inferencer([{'img': np.zeros((8, 8, 3), np.float32), 'text': 'x'}])
    with pytest.raises(ValueError, match='batch_size'):
        inferencer(img0, texts='x', batch_size=0)
    broken = setup['tmp'] / 'broken.png'
    broken.write_bytes(b'not an image')
    with pytest.raises(ValueError, match=r'inputs: could not read image .*broken\.png'):
        inferencer(str(broken), texts='x')


def test_checkpoint_errors_and_mismatches(setup, tmp_path):
    cfg_path = setup['cfg_path']
    missing = str(tmp_path / 'missing.pth')
    with pytest.raises(FileNotFoundError, match=r'missing\.pth'):
        RISInferencer(cfg_path, weights=missing, device='cpu')
    with pytest.raises(FileNotFoundError, match=r'no_such_config\.py'):
        RISInferencer(str(tmp_path / 'no_such_config.py'), device='cpu')

    state = torch.load(setup['ckpt'], map_location='cpu', weights_only=True)['state_dict']
    dropped = 'decode_head.conv_seg.weight'
    partial = {k: v for k, v in state.items() if k != dropped}
    partial['extra.weight'] = torch.zeros(3)
    path = str(tmp_path / 'partial.pth')
    save_checkpoint({'state_dict': partial}, path)
    inferencer = RISInferencer(cfg_path, weights=path, device='cpu')
    assert inferencer.missing_keys == [dropped]
    assert inferencer.unexpected_keys == ['extra.weight']

    wrong = dict(state)
    wrong[dropped] = torch.zeros(3, *state[dropped].shape[1:])
    path = str(tmp_path / 'wrong.pth')
    save_checkpoint({'state_dict': wrong}, path)
    with pytest.raises(RuntimeError, match=r'decode_head\.conv_seg\.weight \(3, 16, 1, 1\)'):
        RISInferencer(cfg_path, weights=path, device='cpu')

    path = str(tmp_path / 'foreign.pth')
    save_checkpoint({'state_dict': {'other.weight': torch.zeros(2)}}, path)
    with pytest.raises(ValueError, match="holds none of the model's weights"):
        RISInferencer(cfg_path, weights=path, device='cpu')
