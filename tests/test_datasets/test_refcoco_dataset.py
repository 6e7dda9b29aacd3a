"""Tests of RefCOCODataset on tiny REFER datasets written in the real formats."""
import json
import os.path as osp
import shutil

import numpy as np
import pytest
from mmengine.config import Config
from mmengine.dataset import ConcatDataset
from mmengine.registry import init_default_scope

import mmseg_ris  # noqa: F401  (registration)
from mmseg.registry import DATASETS
from mmseg_ris.datasets import refcoco as refcoco_module
from mmseg_ris.datasets.refcoco import RefCOCODataset

TESTS_DIR = osp.dirname(osp.dirname(osp.abspath(__file__)))
from fixtures_refer import write_refcoco_family, write_refer_root  # noqa: E402  (needs tests/ on sys.path)

REPO = osp.dirname(TESTS_DIR)
RECORD_KEYS = {
    'img_path', 'img_id', 'ref_id', 'ann_ids', 'category_id', 'mask_anns', 'height', 'width',
    'sentences', 'text', 'sent_id', 'exist', 'expr_type', 'dataset_name', 'split', 'seg_fields',
    'reduce_zero_label', 'sample_idx'  # sample_idx: added by mmengine's get_data_info
}
COMBINED_EXCLUDE = [
    dict(dataset_name='refcoco', split_by='unc', splits=['val', 'testA', 'testB']),
    dict(dataset_name='refcoco+', split_by='unc', splits=['val', 'testA', 'testB']),
    dict(dataset_name='refcocog', split_by='umd', splits=['val', 'test']),
]


@pytest.fixture(scope='module')
def root(tmp_path_factory):
    return write_refer_root(str(tmp_path_factory.mktemp('refer_root')))


def _records(dataset):
    return [dataset.get_data_info(i) for i in range(len(dataset))]


@pytest.mark.parametrize('split,num_records,ref_ids', [
    ('train', 4, [1, 2, 3, 9]),  # one record per referent
    ('val', 5, [4, 4, 5, 5, 5]),  # one record per sentence: 2 + 3
    ('testA', 4, [6, 6, 8, 8]),  # 'testAB' ref 8 is part of testA
    ('testB', 3, [7, 8, 8]),
    ('test', 5, [6, 6, 7, 8, 8]),
])
def test_lengths_per_split(root, split, num_records, ref_ids):
    dataset = RefCOCODataset(data_root=root, split=split)
    assert dataset.sentence_mode == ('random' if split == 'train' else 'all')
    assert len(dataset) == num_records
    assert [r['ref_id'] for r in _records(dataset)] == ref_ids


def test_sentence_mode_override(root):
    # train per sentence: 3 + 2 + 1 + 2; val per referent: refs 4 and 5.
    assert len(RefCOCODataset(data_root=root, split='train', sentence_mode='all')) == 8
    assert len(RefCOCODataset(data_root=root, split='val', sentence_mode='random')) == 2
    with pytest.raises(ValueError, match="sentence_mode must be one of"):
        RefCOCODataset(data_root=root, sentence_mode='first')


def test_record_contents(root):
    dataset = RefCOCODataset(data_root=root, split='val')
    record = dataset.get_data_info(0)
    assert set(record) == RECORD_KEYS
    expected_path = osp.join(root, 'images/mscoco/images/train2014',
                             'COCO_train2014_000000000003.jpg')
    assert record['img_path'] == expected_path and osp.isfile(expected_path)
    assert {k: record[k] for k in RECORD_KEYS - {'img_path', 'sentences'}} == dict(
        img_id=3, ref_id=4, ann_ids=[31], category_id=1,
        mask_anns=[dict(id=31, segmentation=[[1, 1, 10, 1, 10, 12, 1, 12]], iscrowd=0)],
        height=24, width=20, text='upper left block', sent_id=40, exist=True, expr_type=None,
        dataset_name='refcoco', split='val', seg_fields=[], reduce_zero_label=False,
        sample_idx=0)
    assert record['sentences'] == [
        dict(sent_id=40, text='upper left block', exist=True, expr_type=None),
        dict(sent_id=41, text='tall box', exist=True, expr_type=None)
    ]
    assert dataset.metainfo['classes'] == ('background', 'object')
    # The crowd RLE annotation of ref 3 is copied as is.
    train = RefCOCODataset(data_root=root, split='train')
    assert train.get_data_info(2)['mask_anns'] == [
        dict(id=21, segmentation=dict(counts=[40, 10, 206], size=[16, 16]), iscrowd=1)]


def test_val_enumerates_every_sentence_once(root):
    dataset = RefCOCODataset(data_root=root, split='val')
    pairs = [(r['ref_id'], r['sent_id'], r['text']) for r in _records(dataset)]
    assert pairs == [(4, 40, 'upper left block'), (4, 41, 'tall box'), (5, 50, 'triangle'),
                     (5, 51, 'bottom shape'), (5, 52, 'the pointy one')]
    # Fetching again gives the same sentence (no sampling in 'all' mode).
    assert [dataset[i]['sent_id'] for i in range(len(dataset))] == [40, 41, 50, 51, 52]


@pytest.mark.parametrize('serialize_data', [True, False])
def test_random_sentence_drawn_at_every_fetch(root, serialize_data):
    dataset = RefCOCODataset(data_root=root, split='train', serialize_data=serialize_data)
    np.random.seed(0)
    draws = [dataset[0] for _ in range(60)]
    texts = {d['text'] for d in draws}
    assert texts == {'the red cup', 'cup on the left', 'café au lait mug ☕ 左边的杯子'}
    # text and sent_id come from the same sentence.
    by_id = {10: 'the red cup', 11: 'cup on the left', 12: 'café au lait mug ☕ 左边的杯子'}
    assert all(by_id[d['sent_id']] == d['text'] and d['exist'] is True for d in draws)
    # Reproducible with NumPy's global seed (what mmengine seeds per worker).
    np.random.seed(0)
    assert [dataset[0]['sent_id'] for _ in range(60)] == [d['sent_id'] for d in draws]
    # The stored record is not modified by fetches.
    assert dataset.get_data_info(0)['sentences'][0]['text'] == 'the red cup'


def test_pipeline_receives_record(root):
    from mmcv.transforms import LoadImageFromFile
    seen = []

    def remember(results):
        seen.append(results)
        return results

    dataset = RefCOCODataset(data_root=root, split='testB',
                             pipeline=[LoadImageFromFile(), remember])
    out = dataset[2]
    assert out['img'].shape == (22, 26, 3) == (out['height'], out['width'], 3)
    assert out['ref_id'] == 8 and out['sent_id'] == 81 and seen[0] is out


def test_text_key_sent(root):
    dataset = RefCOCODataset(data_root=root, split='testA', text_key='sent')
    assert dataset.get_data_info(0)['text'] == 'man filling the frame'
    assert dataset.get_data_info(1)['text'] == 'person'


def test_unicode_and_json_refs_identical(root, tmp_path):
    json_root = write_refcoco_family(str(tmp_path), refs_format='json', images=False)
    from_pickle = RefCOCODataset(data_root=root, split='train', sentence_mode='all')
    from_json = RefCOCODataset(data_root=json_root, split='train', sentence_mode='all')
    rec_p, rec_j = _records(from_pickle), _records(from_json)
    for a, b in zip(rec_p, rec_j):
        assert a.pop('img_path').replace(root, '') == b.pop('img_path').replace(json_root, '')
    assert rec_p == rec_j
    assert rec_p[2]['text'] == 'café au lait mug ☕ 左边的杯子'


def test_rrefcoco_exist_flags(root):
    val = RefCOCODataset(data_root=root, dataset_name='rrefcoco', split='val')
    assert [(r['sent_id'], r['exist']) for r in _records(val)] == [(40, True), (41, False),
                                                                   (42, True)]
    train = RefCOCODataset(data_root=root, dataset_name='rrefcoco', split='train')
    assert len(train) == 1
    assert [s['exist'] for s in train.get_data_info(0)['sentences']] == [True, False, True]


def test_grefcoco_multi_and_no_target(root):
    train = RefCOCODataset(data_root=root, dataset_name='grefcoco', split='train')
    multi, none = _records(train)
    assert (multi['ref_id'], multi['ann_ids'], multi['category_id']) == (1001, [11, 12], 2)
    assert [a['id'] for a in multi['mask_anns']] == [11, 12] and multi['exist'] is True
    assert (none['ref_id'], none['ann_ids'], none['mask_anns']) == (1002, [], [])
    assert none['exist'] is False and none['category_id'] == -1
    val = RefCOCODataset(data_root=root, dataset_name='grefcoco', split='val')
    # Ref 1004's empty expression is skipped: 1 + 1 records.
    assert [(r['ref_id'], r['sent_id'], r['exist']) for r in _records(val)] == [
        (1003, 10030, True), (1004, 10040, False)]


def test_refclef_image_root(root):
    dataset = RefCOCODataset(data_root=root, dataset_name='refclef', split='train')
    record = dataset.get_data_info(0)
    assert record['img_path'] == osp.join(root, 'images/saiapr_tc-12/25/images/25608.jpg')
    assert osp.isfile(record['img_path'])
    seg = record['mask_anns'][0]['segmentation']
    assert isinstance(seg, list) and seg[0]['size'] == [12, 16]
    berkeley = RefCOCODataset(data_root=root, dataset_name='refclef', split_by='berkeley',
                              split='test')
    assert [r['sent_id'] for r in _records(berkeley)] == [130, 131]
    # RefSegformer's COCO layout is a data_prefix change.
    other = RefCOCODataset(data_root=root, split='val',
                           data_prefix=dict(img_path='images/mscoco/train2014'))
    assert other.get_data_info(0)['img_path'] == osp.join(
        root, 'images/mscoco/train2014/COCO_train2014_000000000003.jpg')


def test_exclude_images_combined(root, monkeypatch):
    logs = []
    monkeypatch.setattr(refcoco_module, 'print_log', lambda msg, **kw: logs.append(msg))
    # Evaluation images, by hand: refcoco val {3}, testA {4, 6}, testB {5, 6}; refcoco+
    # val {2}, testA {4}, testB {5}; refcocog umd val {2}, test {5} -> {2, 3, 4, 5, 6}.
    expected = {
        ('refcoco', 'unc'): [1, 2, 9],  # ref 3 (image 2) removed
        ('refcoco+', 'unc'): [101, 106],  # ref 102 (image 3) removed
        ('refcocog', 'umd'): [202, 203],  # ref 201 (image 6) removed
    }
    datasets = []
    for (name, split_by), ref_ids in expected.items():
        dataset = RefCOCODataset(data_root=root, dataset_name=name, split_by=split_by,
                                 split='train', exclude_images=COMBINED_EXCLUDE)
        assert [r['ref_id'] for r in _records(dataset)] == ref_ids
        assert not {r['img_id'] for r in _records(dataset)} & {2, 3, 4, 5, 6}
        datasets.append(dataset)
    assert len(ConcatDataset(datasets)) == 7
    assert ('refcoco (unc) split \'train\': 3 records (sentence_mode=\'random\') from 3 refs, '
            '7 sentences, 2 images' in logs[0])
    assert 'exclude_images removed 1 images (1 refs) of 5 excluded image ids' in logs[0]

    # Excluding its own val split leaves train unchanged (images are disjoint).
    own = RefCOCODataset(data_root=root, split='train',
                         exclude_images=[dict(dataset_name='refcoco', split_by='unc',
                                              splits=['val'])])
    assert len(own) == 4


def test_exclude_images_errors(root):
    with pytest.raises(ValueError, match=r"exclude_images\[0\]: missing keys \['split_by'\]"):
        RefCOCODataset(data_root=root, exclude_images=[dict(dataset_name='refcoco',
                                                            splits=['val'])])
    with pytest.raises(ValueError, match='splits must be a non-empty list'):
        RefCOCODataset(data_root=root, exclude_images=[
            dict(dataset_name='refcoco', split_by='unc', splits='val')])
    with pytest.raises(ValueError, match=r"split 'testa' matches no refs"):
        RefCOCODataset(data_root=root, exclude_images=[
            dict(dataset_name='refcoco', split_by='unc', splits=['testa'])])
    with pytest.raises(FileNotFoundError, match=r"refs\(umd\)\.p"):
        RefCOCODataset(data_root=root, exclude_images=[
            dict(dataset_name='refcoco+', split_by='umd', splits=['val'])])
    # Every train image of G-Ref (google) is a RefCOCO train image: nothing is left.
    with pytest.raises(ValueError, match='is empty after filtering: 1 refs .* 1 removed'):
        RefCOCODataset(data_root=root, dataset_name='refcocog', split_by='google',
                       exclude_images=[dict(dataset_name='refcoco', split_by='unc',
                                            splits=['train'])])


def test_errors_name_file_and_ref(root, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"refs\(unc\)\.p.*expected the REFER layout"):
        RefCOCODataset(data_root=str(tmp_path))
    with pytest.raises(TypeError, match='use refs_file / instances_file'):
        RefCOCODataset(data_root=root, ann_file='refcoco/instances.json')
    with pytest.raises(ValueError, match=r"split 'testC' matches no refs"):
        RefCOCODataset(data_root=root, split='testC')
    # Lazy init reads nothing until full_init.
    lazy = RefCOCODataset(data_root=str(tmp_path), lazy_init=True)
    with pytest.raises(FileNotFoundError):
        lazy.full_init()

    broken = str(tmp_path / 'broken')
    shutil.copytree(osp.join(root, 'refcoco'), osp.join(broken, 'refcoco'))
    path = osp.join(broken, 'refcoco', 'instances.json')
    with open(path) as f:
        instances = json.load(f)
    instances['annotations'] = [a for a in instances['annotations'] if a['id'] != 71]
    with open(path, 'w') as f:
        json.dump(instances, f)
    with pytest.raises(ValueError, match=r'refs\(unc\)\.p: ref_id 9 refers to ann_id 71'):
        RefCOCODataset(data_root=broken)


def test_registry_and_combined_config(root):
    init_default_scope('mmseg')
    built = DATASETS.build(dict(type='RefCOCODataset', data_root=root, split='testB'))
    assert isinstance(built, RefCOCODataset) and len(built) == 3

    cfg = Config.fromfile(osp.join(REPO, 'configs/_base_/datasets/refcoco_combined.py'))
    dataset_cfg = cfg.train_dataloader.dataset
    assert dataset_cfg.type == 'ConcatDataset' and '_delete_' not in dataset_cfg
    assert [(d.dataset_name, d.split_by, d.split) for d in dataset_cfg.datasets] == [
        ('refcoco', 'unc', 'train'), ('refcoco+', 'unc', 'train'), ('refcocog', 'umd', 'train')]
    for sub in dataset_cfg.datasets:
        assert sub.exclude_images == COMBINED_EXCLUDE
        assert sub.pipeline == cfg.train_pipeline and sub.data_root == cfg.data_root
        sub.data_root = root
        sub.pipeline = []
    assert cfg.train_dataloader.batch_size == 8  # inherited from refcoco.py
    combined = DATASETS.build(dataset_cfg)
    assert len(combined) == 7
    assert [combined.get_data_info(i)['ref_id'] for i in range(7)] == [1, 2, 9, 101, 106, 202,
                                                                       203]


def test_with_image_anns_lists_every_object_of_the_image(root, tmp_path):
    dataset = RefCOCODataset(data_root=root, split='val', with_image_anns=True)
    record = dataset.get_data_info(0)
    assert set(record) == RECORD_KEYS | {'image_anns'}
    # Ref 4 refers to annotation 31 of image 3; annotation 32 (a dog) is on the same image.
    assert record['ref_id'] == 4 and record['img_id'] == 3
    assert record['image_anns'] == [
        dict(id=31, category_id=1, segmentation=[[1, 1, 10, 1, 10, 12, 1, 12]], iscrowd=0),
        dict(id=32, category_id=3, segmentation=[[5, 14, 18, 14, 11, 22]], iscrowd=0)]
    assert 'image_anns' not in RefCOCODataset(data_root=root, split='val').get_data_info(0)

    instances = json.load(open(osp.join(root, 'refcoco', 'instances.json')))
    del instances['annotations'][4]['category_id']
    broken = str(tmp_path / 'instances.json')
    with open(broken, 'w') as f:
        json.dump(instances, f)
    with pytest.raises(ValueError, match=r'category_id.*annotation 32 of .*instances.json'):
        RefCOCODataset(data_root=root, split='val', instances_file=broken, with_image_anns=True)
