"""Tests of RISMetric against hand-computed figures."""
import json
import os
import os.path as osp
import socket
from datetime import timedelta

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from mmengine.dataset import DefaultSampler
from mmengine.evaluator import Evaluator
from mmengine.registry import DefaultScope
from mmengine.structures import PixelData
from mmseg.registry import METRICS
from mmseg.structures import SegDataSample
from PIL import Image

import mmseg_ris  # noqa: F401  (registers RISMetric)
from mmseg_ris.evaluation.metrics.ris_metric import RISMetric


def make_sample(pred,
                gt,
                ref_id=None,
                sent_id=None,
                exist=True,
                expr_type=None,
                img_shape=None,
                ori_shape=None,
                **extra):
    """Build a data sample dict as ``SegDataSample.to_dict()`` gives it."""
    pred = torch.as_tensor(pred, dtype=torch.int64)[None]
    gt = torch.as_tensor(gt, dtype=torch.uint8)[None]
    hw = tuple(pred.shape[-2:])
    sample = dict(
        pred_sem_seg=dict(data=pred),
        gt_sem_seg=dict(data=gt),
        img_path=f'img_{ref_id}.jpg',
        ref_id=ref_id,
        sent_id=sent_id,
        exist=exist,
        expr_type=expr_type,
        img_shape=img_shape or hw,
        ori_shape=ori_shape or hw)
    sample.update(extra)
    return sample


def row_pair(i, u, width):
    """One-row masks with I = i and U = u: pred has i ones, gt u ones."""
    assert i <= u <= width
    pred = [[1] * i + [0] * (width - i)]
    gt = [[1] * u + [0] * (width - u)]
    return pred, gt


def four_samples():
    """Samples with I/U = 3/4, 0/5, 2/2 and 0/0 (see the masks)."""
    a = make_sample(
        pred=[[1, 1, 1, 0], [0, 0, 0, 0]],
        gt=[[1, 1, 1, 1], [0, 0, 0, 0]],  # I = 3, U = 4
        ref_id=1,
        sent_id=10,
        expr_type='spatial')
    b = make_sample(
        pred=[[0, 0, 0, 0], [1, 1, 0, 0]],
        gt=[[1, 1, 1, 0], [0, 0, 0, 0]],  # I = 0, U = 3 + 2 = 5
        ref_id=2,
        sent_id=20,
        expr_type='spatial')
    c = make_sample(
        pred=[[0, 1, 1, 0], [0, 0, 0, 0]],
        gt=[[0, 1, 1, 0], [0, 0, 0, 0]],  # I = 2, U = 2
        ref_id=3,
        sent_id=30,
        expr_type='attribute')
    d = make_sample(
        pred=[[0, 0, 0, 0], [0, 0, 0, 0]],
        gt=[[0, 0, 0, 0], [0, 0, 0, 0]],  # I = 0, U = 0 -> IoU 0
        ref_id=4,
        sent_id=40,
        expr_type=None)
    return [a, b, c, d]


def run_metric(metric, samples):
    """Feed samples through process() and aggregate them."""
    metric.process(None, samples)
    return metric.compute_metrics(list(metric.results))


def test_hand_computed_figures():
    metric = RISMetric()
    samples = four_samples()
    metric.process(None, samples)
    assert [(r['I'], r['U']) for r in metric.results] == [(3, 4), (0, 5),
                                                          (2, 2), (0, 0)]
    res = metric.compute_metrics(list(metric.results))
    # oIoU = (3 + 0 + 2 + 0) / (4 + 5 + 2 + 0) = 5 / 11 = 45.4545...%
    assert res['oIoU'] == 45.45
    # mIoU = (0.75 + 0 + 1 + 0) / 4 = 0.4375
    assert res['mIoU'] == 43.75
    # IoUs 0.75, 0, 1, 0: two are >= 0.5, 0.6, 0.7; only 1.0 is >= 0.8, 0.9
    assert res['P@0.5'] == 50.0
    assert res['P@0.6'] == 50.0
    assert res['P@0.7'] == 50.0
    assert res['P@0.8'] == 25.0
    assert res['P@0.9'] == 25.0
    assert res['num_sentences'] == 4
    assert res['num_skipped_negatives'] == 0


def test_evaluate_adds_prefix_and_clears_results():
    metric = RISMetric()
    metric.process(None, four_samples())
    res = metric.evaluate(4)
    assert res['ris/oIoU'] == 45.45 and res['ris/mIoU'] == 43.75
    assert metric.results == []
    assert RISMetric(prefix='val_ris').prefix == 'val_ris'


def test_ignore_index_pixels_are_not_scored():
    # Valid pixels (gt != 255): (0,0) (0,1) (1,0) (1,1) (1,2).
    # pred & gt on them: (0,0) -> I = 1; pred | gt: (0,0) (0,1) (1,0) -> U = 3
    # (counting the ignored pixels (0,2) (0,3) (1,3) would give U = 6).
    sample = make_sample(
        pred=[[1, 0, 1, 1], [1, 0, 0, 1]],
        gt=[[1, 1, 255, 255], [0, 0, 0, 255]],
        ref_id=5,
        sent_id=50)
    metric = RISMetric()
    res = run_metric(metric, [sample])
    assert (metric.results[0]['I'], metric.results[0]['U']) == (1, 3)
    assert res['oIoU'] == 33.33

    # Another ignore value: 7 marks the same pixels.
    gt7 = [[1, 1, 7, 7], [0, 0, 0, 7]]
    metric7 = RISMetric(ignore_index=7)
    metric7.process(None, [
        make_sample(
            pred=[[1, 0, 1, 1], [1, 0, 0, 1]], gt=gt7, ref_id=5, sent_id=50)
    ])
    assert (metric7.results[0]['I'], metric7.results[0]['U']) == (1, 3)


def test_negative_sentences_are_skipped():
    a, _, c, _ = four_samples()
    negative = make_sample(
        pred=[[1, 1, 1, 0], [0, 0, 0, 0]],
        gt=[[0, 0, 0, 0], [0, 0, 0, 0]],  # I = 0, U = 3, but exist=False
        ref_id=6,
        sent_id=60,
        exist=False)
    # exist missing (None) means a positive sentence, as in R-RefCOCO.
    c['exist'] = None
    metric = RISMetric()
    res = run_metric(metric, [a, negative, c])
    # Positives only: oIoU = (3 + 2) / (4 + 2) = 5 / 6; mIoU = (0.75 + 1) / 2
    # (with the negative it would be 5 / 9 and (0.75 + 0 + 1) / 3).
    assert res['oIoU'] == 83.33
    assert res['mIoU'] == 87.5
    assert res['P@0.9'] == 50.0
    assert res['num_sentences'] == 2
    assert res['num_skipped_negatives'] == 1


def test_only_negatives_give_nan():
    metric = RISMetric()
    res = run_metric(metric, [
        make_sample(
            pred=[[1, 0]], gt=[[0, 0]], ref_id=1, sent_id=1, exist=False)
    ])
    assert res['num_sentences'] == 0 and res['num_skipped_negatives'] == 1
    assert np.isnan(res['oIoU']) and np.isnan(res['P@0.5'])


def test_group_breakdown():
    metric = RISMetric()
    res = run_metric(metric, four_samples())
    # spatial: 3/4 and 0/5 -> oIoU 3/9, mIoU (0.75 + 0) / 2
    assert res['oIoU_spatial'] == 33.33
    assert res['mIoU_spatial'] == 37.5
    assert res['num_sentences_spatial'] == 2
    # attribute: 2/2
    assert res['oIoU_attribute'] == 100.0
    assert res['mIoU_attribute'] == 100.0
    assert res['num_sentences_attribute'] == 1
    # expr_type None counts only in the totals
    assert not any('None' in k for k in res)
    assert res['num_sentences'] == 4

    # group by another metainfo key, and no breakdown at all
    samples = four_samples()
    for s, split in zip(samples, ['x', 'y', 'x', 'y']):
        s['split'] = split
    res = run_metric(RISMetric(group_by='split'), samples)
    # x: 3/4 and 2/2 -> 5/6; y: 0/5 and 0/0 -> 0/5
    assert res['oIoU_x'] == 83.33 and res['oIoU_y'] == 0.0
    assert res['mIoU_y'] == 0.0 and res['num_sentences_y'] == 2
    res = run_metric(RISMetric(group_by=None), four_samples())
    assert sorted(res) == sorted([
        'oIoU', 'mIoU', 'P@0.5', 'P@0.6', 'P@0.7', 'P@0.8', 'P@0.9',
        'num_sentences', 'num_skipped_negatives'
    ])


def test_thresholds_are_compared_exactly():
    # 0.1 * 6 = 0.6000000000000001 and 0.1 * 7 = 0.7000000000000001 as
    # floats, so a float comparison would drop IoU = 3/5 at 0.6 and IoU = 7/10
    # at 0.7; the metric reads them as the decimals 0.6 and 0.7.
    thresholds = [0.1 * i for i in range(5, 10)]
    assert not 3 / 5 >= thresholds[1] and not 7 / 10 >= thresholds[2]
    p1, g1 = row_pair(3, 5, 5)  # IoU 3/5
    p2, g2 = row_pair(7, 10, 10)  # IoU 7/10
    res = run_metric(
        RISMetric(thresholds=thresholds),
        [make_sample(p1, g1, 1, 1),
         make_sample(p2, g2, 2, 2)])
    assert res['P@0.5'] == 100.0
    assert res['P@0.6'] == 100.0  # 3/5 >= 0.6 and 7/10 >= 0.6
    assert res['P@0.7'] == 50.0  # only 7/10
    assert res['P@0.8'] == 0.0
    # a threshold exactly at I/U = 1/2
    res = run_metric(
        RISMetric(thresholds=[0.5]), [make_sample(*row_pair(1, 2, 2), 1, 1)])
    assert res['P@0.5'] == 100.0


@pytest.mark.parametrize('kwargs, match', [
    (dict(eval_resolution='resized'), 'eval_resolution'),
    (dict(thresholds=(0.5, 0)), 'thresholds'),
    (dict(thresholds=(1.5, )), 'thresholds'),
    (dict(thresholds=(0.5, 0.5)), 'twice'),
    (dict(keep_results=True), 'output_dir'),
    (dict(format_only=True), 'output_dir'),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RISMetric(**kwargs)


def test_unknown_argument_is_rejected():
    with pytest.raises(TypeError):
        RISMetric(treshold=0.5)


def test_bad_mask_values():
    bad_pred = make_sample(pred=[[0, 2]], gt=[[0, 1]], ref_id=8, sent_id=80)
    with pytest.raises(ValueError, match=r'pred_sem_seg.*\[2\]'):
        RISMetric().process(None, [bad_pred])
    bad_gt = make_sample(pred=[[0, 1]], gt=[[0, 5]], ref_id=8, sent_id=80)
    with pytest.raises(ValueError, match=r'sent_id=80.*gt_sem_seg.*\[5\]'):
        RISMetric().process(None, [bad_gt])


def test_eval_resolution_mismatch():
    small = [[1, 0, 0], [0, 1, 0]]  # 2 x 3, the resized input
    large = [[0] * 6 for _ in range(4)]  # 4 x 6, the original image
    ids = dict(ref_id=9, sent_id=91, img_shape=(2, 3), ori_shape=(4, 6))

    # 'input': GT loaded after Resize (original size) -> pipeline order.
    sample = make_sample(pred=small, gt=large, **ids)
    with pytest.raises(ValueError) as err:
        RISMetric(eval_resolution='input').process(None, [sample])
    msg = str(err.value)
    for part in [
            "img_path='img_9.jpg'", 'ref_id=9', 'sent_id=91', '(4, 6)',
            '(2, 3)', 'LoadRefMask before Resize'
    ]:
        assert part in msg, (part, msg)
    assert 'output_size' not in msg

    # 'input': prediction at the original size -> segmentor test_cfg.
    sample = make_sample(pred=large, gt=small, **ids)
    with pytest.raises(
            ValueError, match=r"test_cfg.output_size='input'") as err:
        RISMetric(eval_resolution='input').process(None, [sample])
    assert 'LoadRefMask' not in str(err.value)

    # 'original': GT at the input size -> LoadRefMask after Resize.
    sample = make_sample(pred=large, gt=small, **ids)
    with pytest.raises(ValueError, match='LoadRefMask after Resize'):
        RISMetric(eval_resolution='original').process(None, [sample])

    # None: only agreement is required, the message names both settings.
    with pytest.raises(ValueError) as err:
        RISMetric().process(None, [sample])
    for part in [
            '(4, 6)', '(2, 3)', 'LoadRefMask', 'test_cfg.output_size',
            'sent_id=91'
    ]:
        assert part in str(err.value)

    # Matching settings pass and score at that size.
    metric = RISMetric(eval_resolution='input')
    metric.process(None, [make_sample(pred=small, gt=small, **ids)])
    assert (metric.results[0]['I'], metric.results[0]['U']) == (2, 2)
    metric = RISMetric(eval_resolution='original')
    metric.process(None, [make_sample(pred=large, gt=large, **ids)])
    assert (metric.results[0]['I'], metric.results[0]['U']) == (0, 0)

    # The shape key must be present.
    sample = make_sample(pred=small, gt=small, ref_id=9, sent_id=91)
    sample['img_shape'] = None
    with pytest.raises(KeyError, match='img_shape'):
        RISMetric(eval_resolution='input').process(None, [sample])


def test_output_dir_files(tmp_path):
    out = str(tmp_path / 'out')
    samples = four_samples()
    samples[1]['exist'] = False  # the 0/5 sentence becomes a negative
    pred_before = samples[0]['pred_sem_seg']['data'].clone()
    metric = RISMetric(output_dir=out, keep_results=True)
    metric.process(None, samples)
    res = metric.compute_metrics(list(metric.results))
    # positives 3/4, 2/2, 0/0: oIoU 5/6, mIoU (0.75 + 1 + 0) / 3
    assert res['oIoU'] == 83.33 and res['mIoU'] == 58.33
    # the written mask does not alter the sample
    assert torch.equal(samples[0]['pred_sem_seg']['data'], pred_before)

    for s in samples:
        png = osp.join(out, f"{s['ref_id']}_{s['sent_id']}.png")
        mask = np.array(Image.open(png))
        assert mask.dtype == np.uint8
        np.testing.assert_array_equal(
            mask, s['pred_sem_seg']['data'][0].numpy() * 255)

    with open(osp.join(out, 'results.json')) as f:
        summary = json.load(f)
    # full precision in the file, rounded in the returned dict
    assert summary['overall']['oIoU'] == pytest.approx(100 * 5 / 6, rel=1e-12)
    assert summary['overall']['mIoU'] == pytest.approx(
        100 * 1.75 / 3, rel=1e-12)
    assert summary['overall']['num_sentences'] == 3
    assert summary['num_skipped_negatives'] == 1
    # spatial keeps only 3/4 (the 0/5 sentence is negative)
    assert summary['groups']['spatial']['oIoU'] == pytest.approx(75.0)
    assert summary['settings']['thresholds'] == [0.5, 0.6, 0.7, 0.8, 0.9]

    with open(osp.join(out, 'per_sentence.jsonl')) as f:
        lines = [json.loads(line) for line in f]
    assert [(x['ref_id'], x['sent_id'], x['I'], x['U'])
            for x in lines] == [(1, 10, 3, 4), (2, 20, 0, 5), (3, 30, 2, 2),
                                (4, 40, 0, 0)]
    assert [x['IoU'] for x in lines] == [0.75, None, 1.0, 0.0]
    assert [x['exist'] for x in lines] == [True, False, True, True]
    assert [x['group']
            for x in lines] == ['spatial', 'spatial', 'attribute', None]
    assert lines[0]['mask'] == '1_10.png'
    assert lines[0]['img_path'] == 'img_1.jpg'


def test_output_dir_without_keep_results_writes_no_masks(tmp_path):
    out = tmp_path / 'out'
    run_metric(RISMetric(output_dir=str(out)), four_samples())
    assert sorted(os.listdir(out)) == ['per_sentence.jsonl', 'results.json']


def test_mask_names_without_ids(tmp_path):
    out = tmp_path / 'out'
    metric = RISMetric(output_dir=str(out), keep_results=True)
    with_idx = make_sample(pred=[[1, 0]], gt=[[1, 0]], sample_idx=17)
    bare = make_sample(pred=[[0, 1]], gt=[[1, 0]])
    metric.process(None, [with_idx, bare])
    assert sorted(os.listdir(out)) == ['17.png', 'rank0_000000.png']
    np.testing.assert_array_equal(
        np.array(Image.open(out / 'rank0_000000.png')), [[0, 255]])


def test_format_only(tmp_path):
    out = tmp_path / 'out'
    sample = make_sample(
        pred=[[1, 0], [1, 1]], gt=[[0, 0], [0, 0]], ref_id=3, sent_id=7)
    del sample['gt_sem_seg']  # no ground truth is needed
    metric = RISMetric(output_dir=str(out), format_only=True)
    metric.process(None, [sample])
    assert metric.evaluate(1) == {}
    assert os.listdir(out) == ['3_7.png']
    np.testing.assert_array_equal(
        np.array(Image.open(out / '3_7.png')), [[255, 0], [255, 255]])


def test_registry_and_evaluator_with_seg_data_samples():
    data_samples = []
    for s in four_samples():
        ds = SegDataSample(metainfo={
            k: v
            for k, v in s.items() if k not in ('pred_sem_seg', 'gt_sem_seg')
        })
        ds.pred_sem_seg = PixelData(data=s['pred_sem_seg']['data'])
        ds.gt_sem_seg = PixelData(data=s['gt_sem_seg']['data'])
        data_samples.append(ds)

    with DefaultScope.overwrite_default_scope('mmseg'):
        evaluator = Evaluator(dict(type='RISMetric', eval_resolution='input'))
    assert isinstance(evaluator.metrics[0], RISMetric)
    assert METRICS.get('RISMetric') is RISMetric
    # Evaluator.process turns each SegDataSample into a dict (to_dict()).
    evaluator.process(data_samples=data_samples[:3], data_batch=None)
    evaluator.process(data_samples=data_samples[3:], data_batch=None)
    res = evaluator.evaluate(4)
    assert res['ris/oIoU'] == 45.45  # 5 / 11
    assert res['ris/mIoU'] == 43.75
    assert res['ris/P@0.8'] == 25.0
    assert res['ris/oIoU_spatial'] == 33.33


# ---- several processes ----------------------------------------------------

# (I, U, exist, expr_type) of seven sentences; sentence k has ref_id k.
DIST_ROWS = [(9, 10, True, 'a'), (1, 10, True, 'b'), (2, 4, True, 'a'),
             (0, 20, True, 'b'), (6, 6, True, 'a'), (0, 4, False, 'b'),
             (3, 12, True, 'b')]


def dist_samples():
    """The seven sentences of DIST_ROWS as one-row masks of width 20."""
    samples = []
    for k, (i, u, exist, group) in enumerate(DIST_ROWS):
        pred, gt = row_pair(i, u, 20)
        if not exist:  # a negative: empty gt, u predicted pixels
            pred, gt = row_pair(u, u, 20)[0], [[0] * 20]
        samples.append(
            make_sample(
                pred,
                gt,
                ref_id=k,
                sent_id=100 + k,
                exist=exist,
                expr_type=group))
    return samples


def dist_worker(rank, world_size, port, tmpdir):
    """Evaluate the share of DefaultSampler on one rank, dump the figures."""
    import torch.distributed as torch_dist
    torch_dist.init_process_group(
        'gloo',
        init_method=f'tcp://127.0.0.1:{port}',
        rank=rank,
        world_size=world_size,
        timeout=timedelta(seconds=60))
    try:
        samples = dist_samples()
        # 7 samples on 2 ranks: rank 0 gets 0 2 4 6, rank 1 gets 1 3 5 and
        # sample 0 again as padding (dropped by collect_results' size).
        indices = list(DefaultSampler(samples, shuffle=False))
        batch = [samples[i] for i in indices]

        local = RISMetric()  # what this rank alone would report
        local.process(None, batch)
        local_res = local.compute_metrics(list(local.results))

        metric = RISMetric(
            output_dir=osp.join(tmpdir, 'out'),
            keep_results=True,
            collect_dir=osp.join(tmpdir, 'collect'))
        metric.process(None, batch[:2])
        metric.process(None, batch[2:])
        res = metric.evaluate(len(samples))
        with open(osp.join(tmpdir, f'rank{rank}.json'), 'w') as f:
            json.dump(dict(indices=indices, local=local_res, res=res), f)
    finally:
        torch_dist.destroy_process_group()


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def test_two_processes_give_exact_global_figures(tmp_path):
    # fork: the children inherit the imports (spawn re-imports mmseg: ~15 s)
    fork = 'fork' in mp.get_all_start_methods()
    mp.start_processes(
        dist_worker,
        args=(2, free_port(), str(tmp_path)),
        nprocs=2,
        join=True,
        start_method='fork' if fork else 'spawn')
    ranks = []
    for r in range(2):
        with open(tmp_path / f'rank{r}.json') as f:
            ranks.append(json.load(f))
    assert ranks[0]['indices'] == [0, 2, 4, 6]
    assert ranks[1]['indices'] == [1, 3, 5, 0]

    single = RISMetric()
    single.process(None, dist_samples())
    expected = single.evaluate(7)  # names carry the 'ris/' prefix
    # By hand, positives 0 1 2 3 4 6:
    # oIoU = (9+1+2+0+6+3) / (10+10+4+20+6+12) = 21 / 62 = 33.87%
    # mIoU = (0.9+0.1+0.5+0+1+0.25) / 6 = 45.83%; P@0.5 = 3/6, P@0.6 = 2/6
    # a (0 2 4): 17/20 = 85%, mIoU 80%; b (1 3 6): 4/42 = 9.52%, mIoU 11.67%
    hand = {
        'ris/oIoU': 33.87,
        'ris/mIoU': 45.83,
        'ris/P@0.5': 50.0,
        'ris/P@0.6': 33.33,
        'ris/P@0.9': 33.33,
        'ris/num_sentences': 6,
        'ris/num_skipped_negatives': 1,
        'ris/oIoU_a': 85.0,
        'ris/mIoU_a': 80.0,
        'ris/oIoU_b': 9.52,
        'ris/mIoU_b': 11.67,
        'ris/num_sentences_a': 3,
        'ris/num_sentences_b': 3
    }
    for k, v in hand.items():
        assert expected[k] == v, k
    # Every rank gets exactly the global figures.
    assert ranks[0]['res'] == expected
    assert ranks[1]['res'] == expected

    # Averaging per-rank figures would be wrong: rank 0 alone has
    # (9+2+6+3)/(10+4+6+12) = 62.5%, rank 1 alone (1+0+9)/(10+20+10) = 25%.
    assert ranks[0]['local']['oIoU'] == 62.5
    assert ranks[1]['local']['oIoU'] == 25.0
    naive = (ranks[0]['local']['oIoU'] + ranks[1]['local']['oIoU']) / 2
    assert naive != pytest.approx(expected['ris/oIoU'], abs=1)

    # Rank 0 wrote one line per sentence, padding dropped, in dataset order.
    with open(tmp_path / 'out' / 'per_sentence.jsonl') as f:
        lines = [json.loads(line) for line in f]
    assert [x['sent_id'] for x in lines] == [100 + k for k in range(7)]
    assert [(x['I'], x['U']) for x in lines] == [(i, u)
                                                 for i, u, _, _ in DIST_ROWS]
    pngs = sorted(
        p for p in os.listdir(tmp_path / 'out') if p.endswith('.png'))
    assert pngs == sorted(f'{k}_{100 + k}.png' for k in range(7))
