"""Tests of the synthetic RefCOCO-format generator.

The generated files are read back only through the public formats (plain
``pickle``/``json``, pycocotools ``COCO`` and mask decoding, OpenCV for the
JPEGs). Every sentence is re-parsed with an independent grammar written here
and resolved against what ``instances.json`` says about the objects
(``attributes``, decoded visible masks, ``area``), with thresholds of its own
that sit inside the generator's documented margin bands. So a sentence passes
only if its text, not the generator's internal program, singles out its
annotation.
"""
import importlib.util
import json
import os
import os.path as osp
import pickle
import re
from typing import Dict, List, Set

import cv2
import numpy as np
import pycocotools.mask as mask_utils
import pytest
from pycocotools.coco import COCO

from mmseg_ris.datasets.synthetic import generate_synthetic_refcoco

NUM_IMAGES = 40
SEED = 3
REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))

REF_KEYS = {'ref_id', 'ann_id', 'image_id', 'category_id', 'split',
            'sent_ids', 'file_name', 'sentences'}
SENT_KEYS = {'sent_id', 'raw', 'sent', 'tokens', 'expr_type'}
REFS_FILES = {  # folder -> (refs file, its splits)
    'refcoco': [('refs(unc)', {'train', 'val', 'testA', 'testB'})],
    'refcoco+': [('refs(unc)', {'train', 'val', 'testA', 'testB'})],
    'refcocog': [('refs(umd)', {'train', 'val', 'test'}),
                 ('refs(google)', {'train', 'val'})],
    'rrefcoco': [('refs(unc)', {'train', 'val', 'testA', 'testB'})],
}
COLOR_RGB = {'red': (215, 35, 35), 'green': (40, 165, 55),
             'blue': (35, 75, 215), 'yellow': (240, 205, 25),
             'purple': (135, 55, 175), 'orange': (245, 130, 20)}

# --------------------------------------------------------------- fixtures


@pytest.fixture(scope='module')
def root(tmp_path_factory):
    out = tmp_path_factory.mktemp('synthetic')
    stats = generate_synthetic_refcoco(str(out), NUM_IMAGES, seed=SEED)
    return str(out), stats


@pytest.fixture(scope='module')
def coco(root):
    return COCO(osp.join(root[0], 'refcoco', 'instances.json'))


@pytest.fixture(scope='module')
def scenes(coco):
    return load_scenes(coco)


def read_tree(path: str) -> Dict[str, bytes]:
    out = {}
    for dirpath, _, names in os.walk(path):
        for name in names:
            full = osp.join(dirpath, name)
            with open(full, 'rb') as f:
                out[osp.relpath(full, path)] = f.read()
    return out


def load_refs(root: str, folder: str, name: str) -> List[dict]:
    with open(osp.join(root, folder, name + '.json')) as f:
        return json.load(f)


# --------------------------------------------------------------- the checker
# Objects as instances.json describes them, then a grammar of its own.


class Obj:

    def __init__(self, ann: dict, mask: np.ndarray, height: int, width: int):
        self.ann_id = ann['id']
        self.shape = ann['attributes']['shape']
        self.color = ann['attributes']['color']
        self.size = ann['attributes']['size']
        self.area = ann['area']
        ys, xs = np.nonzero(mask)
        self.x = xs.mean() / width  # centroid of the visible mask, 0..1
        self.y = ys.mean() / height


def load_scenes(coco: COCO) -> Dict[int, List[Obj]]:
    scenes = {}
    for img_id, img in coco.imgs.items():
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[img_id]))
        scenes[img_id] = [Obj(a, coco.annToMask(a), img['height'],
                              img['width']) for a in anns]
    return scenes


SIZE_WORDS = {'small': 'small', 'little': 'small', 'big': 'big',
              'large': 'big'}
COLOR_WORDS = '|'.join(COLOR_RGB)
SHAPE_WORDS = 'circle|square|triangle|star|hexagon'
REL = (r'(?P<rel>left of|to the left of|right of|to the right of|above|'
       r'below|under)')


def noun_phrase(group: str, plural: bool = False) -> str:
    nouns = (rf'(?:{SHAPE_WORDS})s|objects|shapes' if plural else
             rf'{SHAPE_WORDS}|object|shape|one')
    return (rf'(?:(?P<{group}size>small|little|big|large) )?'
            rf'(?:(?P<{group}color>{COLOR_WORDS}) )?(?P<{group}noun>{nouns})')


NP_A, NP_B, NPS_A = noun_phrase('a'), noun_phrase('b'), noun_phrase('a', True)
GRAMMAR = [  # (form, expression type, pattern)
    ('attr', 'attribute', rf'{NP_A}'),
    ('rel', 'relational',
     rf'{NP_A} (?:that is |which is |which is located )?{REL} the {NP_B}'),
    ('sup', 'superlative',
     rf'(?P<sup>leftmost|rightmost|topmost|highest|bottommost|lowest|'
     rf'biggest|largest|smallest) {NP_A}'),
    ('sup', 'superlative',
     rf'{NP_A} that is (?:farthest|furthest) to the (?P<sup>left|right)'),
    ('sup', 'superlative',
     rf'{NP_A} that is closest to the (?P<sup>top|bottom)'),
    ('ord', 'superlative',
     rf'(?P<ord>second|third) {NP_A} from the (?P<side>left|right|top|'
     rf'bottom)'),
    ('pos', 'position',
     rf'{NP_A} (?:located )?(?P<pos>on the left|on the right|at the top|'
     rf'at the bottom|in the (?:top|bottom) (?:left|right)|in the middle)'
     rf'(?: side| corner)?(?: of the image)?'),
    ('all', 'attribute', rf'all (?:the )?{NPS_A}'),
    ('count', 'attribute',
     rf'(?P<count>two|three|four|five|six|both) {NPS_A}'),
    ('relall', 'relational', rf'all {NPS_A} (?:that are )?{REL} the {NP_B}'),
    ('conj', 'attribute', rf'{NP_A} and the {NP_B}'),
]
GRAMMAR = [(f, t, re.compile(f'^{p}$')) for f, t, p in GRAMMAR]
COUNT_WORDS = {'two': 2, 'both': 2, 'three': 3, 'four': 4, 'five': 5,
               'six': 6}
SUP_SIDE = {'leftmost': 'left', 'rightmost': 'right', 'topmost': 'top',
            'highest': 'top', 'bottommost': 'bottom', 'lowest': 'bottom',
            'left': 'left', 'right': 'right', 'top': 'top',
            'bottom': 'bottom'}
# Checker thresholds: the middle of the generator's margin bands.
REL_MIN = 0.05
SIDE_MAX = 0.43
MIDDLE_MAX = 0.17
GAP_MIN = 0.04
RATIO_MIN = 1.15


class Unclear(Exception):
    """The sentence does not single out its objects with a clear margin."""


def parse(sent: str):
    """(form, expression type, match) of a sentence; exactly one form."""
    core = re.sub(r'^(?:there is a |the |a )', '', sent)
    core = re.sub(r' in the (?:image|picture)$', '', core)
    found = [(f, t, m) for f, t, rx in GRAMMAR
             for m in [rx.match(core)] if m]
    assert len(found) == 1, f'{sent!r} parses as {[f for f, _, _ in found]}'
    return found[0]


def select(objs: List[Obj], m, group: str) -> List[Obj]:
    size = m.group(group + 'size')
    color = m.group(group + 'color')
    noun = m.group(group + 'noun')
    shape = noun.rstrip('s') if noun.rstrip('s') in SHAPE_WORDS.split('|') \
        else None
    return [o for o in objs
            if (size is None or o.size == SIZE_WORDS[size])
            and (color is None or o.color == color)
            and (shape is None or o.shape == shape)]


def side_coord(o: Obj, side: str) -> float:
    return {'left': o.x, 'right': 1 - o.x, 'top': o.y, 'bottom': 1 - o.y}[side]


def relation(a: Obj, b: Obj, rel: str) -> bool:
    rel = rel.replace('to the ', '').replace(' of', '')
    d = {'left': b.x - a.x, 'right': a.x - b.x, 'above': b.y - a.y,
         'below': a.y - b.y, 'under': a.y - b.y}[rel]
    return d > REL_MIN


def in_region(o: Obj, phrase: str) -> bool:
    if phrase == 'in the middle':
        return max(abs(o.x - 0.5), abs(o.y - 0.5)) < MIDDLE_MAX
    words = phrase.split()[2:]  # drop "on the" / "at the" / "in the"
    return all(side_coord(o, w) < SIDE_MAX for w in words)


def resolve(objs: List[Obj], sent: str) -> Set[int]:
    """Annotation ids the sentence refers to, by this file's own grammar."""
    form, _, m = parse(sent)
    if form == 'conj':
        a, b = select(objs, m, 'a'), select(objs, m, 'b')
        if len(a) != 1 or len(b) != 1 or a[0] is b[0]:
            raise Unclear(sent)
        return {a[0].ann_id, b[0].ann_id}
    cands = select(objs, m, 'a')
    if form in ('attr', 'all'):
        return {o.ann_id for o in cands}
    if form == 'count':
        if len(cands) != COUNT_WORDS[m.group('count')]:
            raise Unclear(sent)
        return {o.ann_id for o in cands}
    if form in ('rel', 'relall'):
        ref = select(objs, m, 'b')
        if len(ref) != 1:
            raise Unclear(sent)
        return {o.ann_id for o in cands
                if o is not ref[0] and relation(o, ref[0], m.group('rel'))}
    if form == 'pos':
        return {o.ann_id for o in cands if in_region(o, m.group('pos'))}
    if len(cands) < 2:
        raise Unclear(sent)
    if form == 'sup' and m.group('sup') in ('biggest', 'largest', 'smallest'):
        big = m.group('sup') != 'smallest'
        order = sorted(cands, key=lambda o: o.area, reverse=big)
        ratio = (order[0].area / order[1].area if big else
                 order[1].area / order[0].area)
        if ratio < RATIO_MIN:
            raise Unclear(sent)
        return {order[0].ann_id}
    side = SUP_SIDE[m.group('sup')] if form == 'sup' else m.group('side')
    k = 1 if form == 'sup' else {'second': 2, 'third': 3}[m.group('ord')]
    order = sorted(cands, key=lambda o: side_coord(o, side))
    if len(order) <= k:
        raise Unclear(sent)
    keys = [side_coord(o, side) for o in order]
    if keys[k] - keys[k - 1] < GAP_MIN or (
            k > 1 and keys[k - 1] - keys[k - 2] < GAP_MIN):
        raise Unclear(sent)
    return {order[k - 1].ann_id}


def head_matches(objs: List[Obj], sent: str) -> List[Obj]:
    """Objects matching the head noun phrase (before any relation)."""
    form, _, m = parse(sent)
    assert form in ('attr', 'rel'), sent
    return select(objs, m, 'a')


def normalize(raw: str) -> str:
    return ' '.join(''.join(c if c.isalnum() or c == ' ' else ' '
                            for c in raw.lower()).split())


# --------------------------------------------------------------- the checker's own tests


def test_checker_on_a_hand_made_scene():
    """The checker itself, on objects with hand-set centroids and areas."""

    def obj(ann_id, shape, color, size, x, y, area):
        o = Obj.__new__(Obj)
        o.ann_id, o.shape, o.color, o.size = ann_id, shape, color, size
        o.x, o.y, o.area = x, y, area
        return o

    objs = [obj(1, 'circle', 'red', 'small', 0.2, 0.5, 100),
            obj(2, 'circle', 'blue', 'big', 0.8, 0.2, 400),
            obj(3, 'square', 'blue', 'small', 0.5, 0.8, 120),
            obj(4, 'circle', 'red', 'big', 0.5, 0.5, 380)]
    assert resolve(objs, 'the blue square') == {3}
    assert resolve(objs, 'red circle') == {1, 4}
    assert resolve(objs, 'the circle left of the blue square') == {1}
    assert resolve(objs, 'the red one which is located above the square') \
        == {1, 4}
    assert resolve(objs, 'the leftmost circle') == {1}
    assert resolve(objs, 'the red circle that is farthest to the right') \
        == {4}
    assert resolve(objs, 'the second circle from the left') == {4}
    assert resolve(objs, 'the object in the top right') == {2}
    assert resolve(objs, 'the square at the bottom of the image') == {3}
    assert resolve(objs, 'the circle in the middle') == {4}
    assert resolve(objs, 'all red objects') == {1, 4}
    assert resolve(objs, 'the three circles') == {1, 2, 4}
    assert resolve(objs, 'all circles above the blue square') == {1, 2, 4}
    assert resolve(objs, 'the small red circle and the big blue one') \
        == {1, 2}
    assert resolve(objs, 'the green star') == set()
    with pytest.raises(Unclear):  # 400 vs 380 is no clear "biggest"
        resolve(objs, 'the biggest object')
    with pytest.raises(Unclear):
        resolve(objs, 'the two circles')  # there are three
    with pytest.raises(AssertionError):
        parse('the circle near the square')


# --------------------------------------------------------------- generator tests


def test_bad_arguments(tmp_path):
    for kwargs in (dict(num_images=3), dict(num_images=2.5),
                   dict(num_images=True), dict(seed=-1), dict(seed=1.0)):
        with pytest.raises(ValueError, match='num_images|seed'):
            generate_synthetic_refcoco(str(tmp_path), **kwargs)


def test_deterministic(tmp_path):
    generate_synthetic_refcoco(str(tmp_path / 'a'), 12, seed=7)
    generate_synthetic_refcoco(str(tmp_path / 'b'), 12, seed=7)
    generate_synthetic_refcoco(str(tmp_path / 'c'), 12, seed=8)
    a, b, c = (read_tree(str(tmp_path / x)) for x in 'abc')
    # images, then refcoco, refcoco+, refcocog, rrefcoco and grefcoco files
    assert len(a) == 12 + 3 + 3 + 5 + 3 + 2
    assert a == b
    assert a.keys() == c.keys()
    for name in ('refcoco/refs(unc).p', 'refcoco/instances.json',
                 'images/mscoco/images/train2014/'
                 'COCO_train2014_000000000001.jpg'):
        assert a[name] != c[name]


def test_layout_and_formats(root):
    out, _ = root
    files = read_tree(out)
    inst = files['refcoco/instances.json']
    for folder in ('refcoco+', 'refcocog', 'rrefcoco', 'grefcoco'):
        assert files[f'{folder}/instances.json'] == inst
    for folder, entries in REFS_FILES.items():
        for name, splits in entries:
            raw = files[f'{folder}/{name}.p']
            assert raw[:2] == b'\x80\x02'  # pickle protocol 2, like REFER's
            refs = pickle.loads(raw)
            assert refs == load_refs(out, folder, name)
            assert {r['split'] for r in refs} == splits
            sent_ids = [s for r in refs for s in r['sent_ids']]
            assert len(sent_ids) == len(set(sent_ids))
            assert [r['ref_id'] for r in refs] == list(range(len(refs)))
            for ref in refs:
                assert set(ref) == REF_KEYS
                assert ref['sent_ids'] == [s['sent_id']
                                           for s in ref['sentences']]
                assert ref['file_name'] == (
                    f"COCO_train2014_{ref['image_id']:012d}_"
                    f"{ref['ann_id']}.jpg")
                for s in ref['sentences']:
                    extra = {'exist'} if folder == 'rrefcoco' and \
                        'exist' in s else set()
                    assert set(s) == SENT_KEYS | extra
                    assert s['sent'] == normalize(s['raw'])
                    assert s['tokens'] == s['sent'].split()
    assert 'grefs(unc).p' not in os.listdir(osp.join(out, 'grefcoco'))

    data = json.loads(inst)
    assert set(data) == {'info', 'licenses', 'images', 'annotations',
                         'categories'}
    assert [c['name'] for c in data['categories']] == [
        'circle', 'square', 'triangle', 'star', 'hexagon']
    for ann in data['annotations']:
        assert set(ann) == {'id', 'image_id', 'category_id', 'segmentation',
                            'area', 'bbox', 'iscrowd', 'attributes'}
    image_dir = osp.join(out, 'images', 'mscoco', 'images', 'train2014')
    assert len(data['images']) == NUM_IMAGES
    for img in data['images']:
        assert img['file_name'] == f"COCO_train2014_{img['id']:012d}.jpg"
        pixels = cv2.imread(osp.join(image_dir, img['file_name']))
        assert pixels.shape == (img['height'], img['width'], 3)
        assert img['height'] != img['width']
        assert 96 <= img['height'] <= 192 and 96 <= img['width'] <= 192


def test_masks(root, coco):
    out, stats = root
    image_dir = osp.join(out, 'images', 'mscoco', 'images', 'train2014')
    n_rle = n_multi = 0
    cat_names = {c['id']: c['name'] for c in coco.loadCats(coco.getCatIds())}
    for img_id, img in coco.imgs.items():
        pixels = cv2.imread(osp.join(image_dir, img['file_name']))[..., ::-1]
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[img_id]))
        assert 2 <= len(anns) <= 6
        union = np.zeros((img['height'], img['width']), bool)
        for ann in anns:
            assert cat_names[ann['category_id']] == ann['attributes']['shape']
            seg = ann['segmentation']
            if isinstance(seg, dict):
                assert ann['iscrowd'] == 1
                assert isinstance(seg['counts'], str)
                assert seg['size'] == [img['height'], img['width']]
                mask = mask_utils.decode(seg).astype(bool)
            else:
                assert ann['iscrowd'] == 0
                assert all(len(p) >= 6 and len(p) % 2 == 0 for p in seg)
                rles = mask_utils.frPyObjects(seg, img['height'],
                                              img['width'])
                per_poly = mask_utils.decode(rles).astype(np.int64)
                # Disjoint polygons: LAVT's "sum" decoding gives the same mask.
                assert per_poly.sum(axis=2).max() == 1
                mask = per_poly.sum(axis=2) > 0
            assert np.array_equal(mask, coco.annToMask(ann).astype(bool))
            assert ann['area'] == mask.sum() >= 60
            ys, xs = np.nonzero(mask)
            assert ann['bbox'] == [xs.min(), ys.min(), xs.max() - xs.min() + 1,
                                   ys.max() - ys.min() + 1]
            n_parts = cv2.connectedComponents(mask.astype(np.uint8),
                                              connectivity=8)[0] - 1
            background = np.pad(~mask, 1, constant_values=True)
            n_holes = cv2.connectedComponents(background.astype(np.uint8),
                                              connectivity=4)[0] - 2
            if isinstance(seg, dict):
                assert n_holes >= 1
                n_rle += 1
            else:
                assert n_holes == 0
                assert len(seg) == n_parts  # one polygon per part
            n_multi += n_parts > 1
            # Visible masks never overlap, and they show the named colour.
            assert not (union & mask).any()
            union |= mask
            core = cv2.erode(mask.astype(np.uint8), np.ones((5, 5), np.uint8))
            if core.sum() >= 10:
                mean = pixels[core.astype(bool)].mean(axis=0)
                nearest = min(COLOR_RGB, key=lambda c: np.abs(
                    mean - COLOR_RGB[c]).sum())
                assert nearest == ann['attributes']['color']
    # Occlusion makes both kinds of masks in a set of this size.
    assert n_rle >= 1 and n_multi >= 1
    assert stats['instances'] == {
        'images': NUM_IMAGES, 'annotations': len(coco.anns),
        'rle_annotations': n_rle, 'multi_part_annotations': n_multi}


def check_positive(scenes, ref, sent):
    objs = scenes[ref['image_id']]
    form, expr_type, _ = parse(sent['sent'])
    assert sent['expr_type'] == expr_type, sent
    assert resolve(objs, sent['sent']) == {ref['ann_id']}, sent


@pytest.mark.parametrize('folder,name', [
    ('refcoco', 'refs(unc)'), ('refcoco+', 'refs(unc)'),
    ('refcocog', 'refs(umd)'), ('refcocog', 'refs(google)')])
def test_positive_sentences_are_unique(root, scenes, coco, folder, name):
    refs = load_refs(root[0], folder, name)
    types = set()
    for ref in refs:
        ann = coco.anns[ref['ann_id']]
        assert ann['image_id'] == ref['image_id']
        assert ann['category_id'] == ref['category_id']
        assert 1 <= len(ref['sentences']) <= 3
        for sent in ref['sentences']:
            check_positive(scenes, ref, sent)
            types.add(sent['expr_type'])
    if folder == 'refcoco+':
        assert types == {'attribute', 'relational', 'superlative'}
    else:
        assert types == {'attribute', 'relational', 'superlative', 'position'}


def test_refcoco_plus_has_no_absolute_location(root):
    banned = {'leftmost', 'rightmost', 'topmost', 'bottommost', 'highest',
              'lowest', 'top', 'bottom', 'middle', 'second', 'third'}
    for ref in load_refs(root[0], 'refcoco+', 'refs(unc)'):
        for sent in ref['sentences']:
            words = sent['tokens']
            assert not banned & set(words), sent
            # "left" / "right" only inside a relation between two objects.
            for i, w in enumerate(words):
                if w in ('left', 'right'):
                    assert words[i + 1] == 'of', sent
            assert parse(sent['sent'])[0] in ('attr', 'rel', 'sup')


def test_refcocog_is_wordier(root):
    def mean_len(folder, name):
        sents = [s for r in load_refs(root[0], folder, name)
                 for s in r['sentences']]
        return np.mean([len(s['tokens']) for s in sents])

    assert mean_len('refcocog', 'refs(umd)') > \
        mean_len('refcoco', 'refs(unc)') + 1.5


def test_splits_by_image(root):
    out, stats = root
    seen: Dict[str, Dict[int, str]] = {}
    for folder, entries in list(REFS_FILES.items()) + [
            ('grefcoco', [('grefs(unc)', None)])]:
        for name, _ in entries:
            refs = load_refs(out, folder, name)
            image_split: Dict[int, str] = {}
            for ref in refs:
                assert image_split.setdefault(ref['image_id'],
                                              ref['split']) == ref['split']
            seen[f'{folder}/{name}'] = image_split
            counts = stats['datasets'][folder][name[name.index('(') + 1:-1]]
            for split, c in counts['splits'].items():
                sel = [r for r in refs if r['split'] == split]
                assert c == {'images': len({r['image_id'] for r in sel}),
                             'refs': len(sel),
                             'sentences': sum(len(r['sentences'])
                                              for r in sel)}
                assert c['images'] >= 1
    # RefCOCO, RefCOCO+, R-RefCOCO and gRefCOCO share one split of images.
    unc = seen['refcoco/refs(unc)']
    for key in ('refcoco+/refs(unc)', 'rrefcoco/refs(unc)',
                'grefcoco/grefs(unc)'):
        assert all(unc.get(i, s) == s for i, s in seen[key].items())


def test_rrefcoco_negatives(root, scenes):
    refs = load_refs(root[0], 'rrefcoco', 'refs(unc)')
    refcoco = {(r['image_id'], r['ann_id']): r
               for r in load_refs(root[0], 'refcoco', 'refs(unc)')}
    assert len(refs) == len(refcoco)
    n_neg = 0
    for ref in refs:
        objs = scenes[ref['image_id']]
        positives = [s for s in ref['sentences'] if 'exist' not in s]
        negatives = [s for s in ref['sentences'] if 'exist' in s]
        assert [s['sent'] for s in positives] == [
            s['sent'] for s in refcoco[(ref['image_id'],
                                        ref['ann_id'])]['sentences']]
        assert 3 <= len(negatives) <= 5
        for sent in positives:
            check_positive(scenes, ref, sent)
        for sent in negatives:
            assert sent['exist'] is False
            form, expr_type, _ = parse(sent['sent'])
            assert sent['expr_type'] == expr_type
            assert head_matches(objs, sent['sent']) == [], sent
            assert resolve(objs, sent['sent']) == set(), sent
        n_neg += len(negatives)
    assert root[1]['datasets']['rrefcoco']['unc']['negative_sentences'] == \
        n_neg


def test_grefcoco(root, scenes, coco):
    out, stats = root
    refs = load_refs(out, 'grefcoco', 'grefs(unc)')
    kinds = {'single': 0, 'multi': 0, 'none': 0}
    for ref in refs:
        assert set(ref) == REF_KEYS | {'no_target'}
        assert isinstance(ref['ann_id'], list)
        assert len(ref['category_id']) == len(ref['ann_id'])
        assert ref['file_name'] == (f"COCO_train2014_{ref['image_id']:012d}"
                                    f"_{ref['ann_id'][0]}.jpg")
        objs = scenes[ref['image_id']]
        if ref['no_target']:
            assert ref['ann_id'] == [-1] and ref['category_id'] == [-1]
            expected: Set[int] = set()
            kinds['none'] += 1
        else:
            assert -1 not in ref['ann_id']
            assert ref['category_id'] == [coco.anns[a]['category_id']
                                          for a in ref['ann_id']]
            expected = set(ref['ann_id'])
            kinds['single' if len(expected) == 1 else 'multi'] += 1
        for sent in ref['sentences']:
            assert 'exist' not in sent
            form, expr_type, _ = parse(sent['sent'])
            assert sent['expr_type'] == expr_type
            assert resolve(objs, sent['sent']) == expected, sent
    assert min(kinds.values()) >= 5
    assert stats['datasets']['grefcoco']['unc']['multi_target_refs'] == \
        kinds['multi']
    assert stats['datasets']['grefcoco']['unc']['no_target_refs'] == \
        kinds['none']


def test_stats_expression_types(root):
    out, stats = root
    for folder, entries in REFS_FILES.items():
        for name, _ in entries:
            counts: Dict[str, int] = {}
            for ref in load_refs(out, folder, name):
                for s in ref['sentences']:
                    counts[s['expr_type']] = counts.get(s['expr_type'], 0) + 1
            by = name[name.index('(') + 1:-1]
            got = {t: n for t, n in
                   stats['datasets'][folder][by]['expr_types'].items() if n}
            assert got == counts


def test_cli(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location(
        'make_synthetic_refcoco',
        osp.join(REPO, 'tools', 'dataset_converters',
                 'make_synthetic_refcoco.py'))
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    stats = cli.main(['--out', str(tmp_path / 'cli'), '--num-images', '5',
                      '--seed', '11'])
    printed = capsys.readouterr().out
    assert 'refcocog (umd)' in printed and 'wrote' in printed
    api_stats = generate_synthetic_refcoco(str(tmp_path / 'api'), 5, seed=11)
    assert stats == api_stats
    assert read_tree(str(tmp_path / 'cli')) == read_tree(str(tmp_path / 'api'))
