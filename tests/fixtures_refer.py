"""Tiny REFER-format datasets written to a temporary folder, for tests.

Everything is written in the real formats: COCO-style ``instances.json``, refs files as
Python-2-style protocol-2 pickles (byte strings for ``str``, ``BINUNICODE`` for non-ASCII
text, memoised repeats, as ``cPickle`` wrote them) or JSON, gRefCOCO's
``grefs(unc).json``, and real JPEG images. The tables below are the single source of the
content; tests compute expected counts from them by hand.

Layout written by :func:`write_refer_root` (LAVT's)::

    root/images/mscoco/images/train2014/COCO_train2014_000000000001.jpg ... (8 images)
    root/images/saiapr_tc-12/25/images/25608.jpg, 01/images/1234.jpg
    root/refcoco/{instances.json, refs(unc).p}
    root/refcoco+/{instances.json, refs(unc).p}
    root/refcocog/{instances.json, refs(umd).p, refs(google).p}
    root/rrefcoco/{instances.json, refs(unc).p}
    root/grefcoco/{instances.json, grefs(unc).json}
    root/refclef/{instances.json, refs(unc).p, refs(berkeley).p}
"""
import builtins
import json
import os
import os.path as osp
import pickle
import shlex
import struct
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

COCO_IMAGE_DIR = 'images/mscoco/images/train2014'
CLEF_IMAGE_DIR = 'images/saiapr_tc-12'

# (image id, height, width): sizes differ so a swapped height/width shows.
COCO_IMAGES = [(1, 20, 30), (2, 16, 16), (3, 24, 20), (4, 18, 22), (5, 20, 20), (6, 22, 26),
               (7, 16, 28), (8, 30, 18)]
CATEGORIES = [
    dict(id=1, name='person', supercategory='person'),
    dict(id=2, name='cup', supercategory='kitchen'),
    dict(id=3, name='dog', supercategory='animal'),
]
# (ann id, image id, category id, iscrowd, segmentation)
COCO_ANNOTATIONS = [
    (11, 1, 2, 0, [[2, 2, 12, 2, 12, 10, 2, 10]]),
    (12, 1, 2, 0, [[15, 3, 25, 3, 25, 9, 15, 9], [18, 12, 28, 12, 28, 18, 18, 18]]),
    # Crowd annotation with uncompressed RLE (40 background, 10 foreground, 206 background).
    (21, 2, 1, 1, dict(counts=[40, 10, 206], size=[16, 16])),
    (31, 3, 1, 0, [[1, 1, 10, 1, 10, 12, 1, 12]]),
    (32, 3, 3, 0, [[5, 14, 18, 14, 11, 22]]),
    (41, 4, 1, 0, [[0, 0, 21, 0, 21, 17, 0, 17]]),
    (51, 5, 3, 0, [[4, 4, 16, 4, 16, 16, 4, 16]]),
    (61, 6, 1, 0, [[3, 3, 20, 3, 20, 18, 3, 18]]),
    (71, 7, 2, 0, [[2, 2, 26, 2, 26, 14, 2, 14]]),
    (81, 8, 3, 0, [[1, 5, 16, 5, 16, 25, 1, 25]]),
]

# Refs tables: (ref id, image id, ann id, split, sentences).
REFCOCO_UNC = [
    (1, 1, 11, 'train', ['the red cup', 'cup on the left', 'café au lait mug ☕ 左边的杯子']),
    (2, 1, 12, 'train', ['two-part thing on the right', 'right object']),
    (3, 2, 21, 'train', ['crowd blob']),
    (9, 7, 71, 'train', ['wide box', 'long rectangle']),
    (4, 3, 31, 'val', ['upper left block', 'tall box']),
    (5, 3, 32, 'val', ['triangle', 'bottom shape', 'the pointy one']),
    (6, 4, 41, 'testA', ['man filling the frame', 'person']),
    (7, 5, 51, 'testB', ['the square']),
    # REFER's combined split: counted in testA and in testB.
    (8, 6, 61, 'testAB', ['box in both tests', 'shared ref']),
]
REFCOCO_PLUS_UNC = [
    (101, 1, 11, 'train', ['red thing', 'cup']),
    (102, 3, 31, 'train', ['block']),
    (106, 7, 71, 'train', ['long one']),
    (103, 2, 21, 'val', ['blob']),
    (104, 4, 41, 'testA', ['guy']),
    (105, 5, 51, 'testB', ['square thing']),
]
REFCOCOG_UMD = [
    (201, 6, 61, 'train', ['a box that is in both refcoco test splits', 'the big box']),
    (202, 8, 81, 'train', ['the tall rectangle on the left']),
    (203, 7, 71, 'train', ['a wide rectangle across the image']),
    (204, 2, 21, 'val', ['a crowd of pixels']),
    (205, 5, 51, 'test', ['a square in the middle']),
]
REFCOCOG_GOOGLE = [
    (301, 1, 11, 'train', ['a small red cup on a table']),
    (302, 3, 31, 'val', ['a block in the upper left corner']),
]
# R-RefCOCO: (text, exist) with exist None meaning the key is absent.
RREFCOCO_UNC = [
    (1, 1, 11, 'train', [('the red cup', True), ('the blue elephant', False),
                         ('cup on the left', None)]),
    (4, 3, 31, 'val', [('upper left block', None), ('a flying car', False), ('tall box', True)]),
]
# gRefCOCO: (ref id, image id, ann ids ([-1] = no target), category ids, split, sentences).
GREFCOCO_UNC = [
    (1001, 1, [11, 12], [2, 2], 'train', ['both cups', 'everything on the table']),
    (1002, 2, [-1], [-1], 'train', ['the purple giraffe']),
    (1003, 3, [31], [1], 'val', ['upper left block']),
    # gRefCOCO has a few empty expressions; readers skip them.
    (1004, 3, [-1], [-1], 'val', ['a second triangle', '']),
    (1005, 4, [41], [1], 'testA', ['the man']),
    (1006, 5, [51], [3], 'testB', ['the dog']),
]
# RefCLEF: (image id, height, width, file name under images/saiapr_tc-12)
CLEF_IMAGES = [(25608, 12, 16, '25/images/25608.jpg'), (1234, 10, 10, '01/images/1234.jpg')]
# (ann id, image id, category id, boxes (y0, y1, x0, x1) of the RLE parts)
CLEF_ANNOTATIONS = [
    (500, 25608, 1, [(0, 4, 0, 16)]),
    (501, 25608, 2, [(6, 12, 0, 5), (8, 12, 10, 16)]),
    (502, 1234, 3, [(2, 9, 3, 7)]),
]
REFCLEF_UNC = [
    (1, 25608, 500, 'train', ['sky']),
    (2, 25608, 501, 'val', ['rocks left and right']),
    (3, 1234, 502, 'testA', ['man']),
    (4, 1234, 502, 'testB', ['person in the middle']),
    (5, 1234, 502, 'testC', ['guy']),
]
REFCLEF_BERKELEY = [
    (11, 25608, 500, 'train', ['sky at the top']),
    (12, 25608, 501, 'train', ['rocks']),
    (13, 1234, 502, 'test', ['the man', 'middle person']),
]


def coco_file_name(img_id: int) -> str:
    """COCO train2014 file name of an image id."""
    return f'COCO_train2014_{img_id:012d}.jpg'


# --------------------------------------------------------------------------- pickles
def py2_pickle_dumps(obj: Any) -> bytes:
    """Serialise plain data the way Python 2's ``cPickle.dump(obj, f, 2)`` does.

    ``str`` becomes a Python 2 byte string (``SHORT_BINSTRING`` / ``BINSTRING``, UTF-8)
    when ASCII and ``BINUNICODE`` (a Python 2 ``unicode``) otherwise; ``bytes`` are
    written as byte strings unchanged (to test non-UTF-8 content). Strings and
    containers are memoised and repeats written as ``BINGET``, as cPickle does.
    Python 3's own protocol 2 cannot produce byte strings without a ``_codecs`` global.

    Args:
        obj: dicts, lists, tuples, str, bytes, int, float, bool and None.

    Returns:
        bytes: The pickle.
    """
    out = bytearray(b'\x80\x02')
    memo: Dict[int, Tuple[int, Any]] = {}

    def put(o: Any) -> None:
        index = len(memo)
        memo[id(o)] = (index, o)  # keep o alive so its id is not reused
        out.extend(b'q' + bytes([index]) if index < 256 else b'r' + struct.pack('<I', index))

    def save(o: Any) -> None:
        if id(o) in memo and isinstance(o, (str, bytes, list, dict, tuple)):
            index = memo[id(o)][0]
            out.extend(b'h' + bytes([index]) if index < 256 else b'j' + struct.pack('<I', index))
            return
        if o is None:
            out.extend(b'N')
        elif isinstance(o, bool):
            out.extend(b'\x88' if o else b'\x89')
        elif isinstance(o, int):
            if 0 <= o < 256:
                out.extend(b'K' + bytes([o]))
            elif 0 <= o < 65536:
                out.extend(b'M' + struct.pack('<H', o))
            elif -2**31 <= o < 2**31:
                out.extend(b'J' + struct.pack('<i', o))
            else:
                raw = o.to_bytes((o.bit_length() + 8) // 8, 'little', signed=True)
                out.extend(b'\x8a' + bytes([len(raw)]) + raw)
        elif isinstance(o, float):
            out.extend(b'G' + struct.pack('>d', o))
        elif isinstance(o, (str, bytes)):
            if isinstance(o, str) and not o.isascii():
                data = o.encode('utf-8')
                out.extend(b'X' + struct.pack('<I', len(data)) + data)
            else:
                data = o.encode('ascii') if isinstance(o, str) else o
                out.extend(b'U' + bytes([len(data)]) if len(data) < 256 else b'T' +
                           struct.pack('<I', len(data)))
                out.extend(data)
            put(o)
        elif isinstance(o, list):
            out.extend(b']')
            put(o)
            if o:
                out.extend(b'(')
                for item in o:
                    save(item)
                out.extend(b'e')
        elif isinstance(o, dict):
            out.extend(b'}')
            put(o)
            if o:
                out.extend(b'(')
                for key, value in o.items():
                    save(key)
                    save(value)
                out.extend(b'u')
        elif isinstance(o, tuple):
            out.extend(b'(')
            for item in o:
                save(item)
            out.extend(b't')
            put(o)
        else:
            raise TypeError(f'py2_pickle_dumps: cannot write {type(o).__name__}')

    save(obj)
    out.extend(b'.')
    return bytes(out)


def write_py2_pickle(obj: Any, path: str) -> str:
    """Write :func:`py2_pickle_dumps` output to ``path``; returns ``path``."""
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    with open(path, 'wb') as f:
        f.write(py2_pickle_dumps(obj))
    return path


class _Payload:
    """Pickles to a call of ``os.system`` or ``builtins.eval`` that creates ``marker``."""

    def __init__(self, kind: str, marker: str) -> None:
        self.kind = kind
        self.marker = marker

    def __reduce__(self):
        if self.kind == 'system':
            return os.system, (f'touch {shlex.quote(self.marker)}', )
        return builtins.eval, (f'open({self.marker!r}, "w").close()', )


def write_malicious_pickle(path: str, marker: str, kind: str = 'system') -> str:
    """Write a refs-like protocol-2 pickle whose loading would create ``marker``.

    Args:
        path (str): Output file.
        marker (str): File the payload creates if it ever runs.
        kind (str): ``'system'`` (``os.system('touch marker')``) or ``'eval'``
            (``builtins.eval("open(marker, 'w').close()")``).

    Returns:
        str: ``path``.
    """
    if kind not in ('system', 'eval'):
        raise ValueError(f'kind must be "system" or "eval", got {kind!r}')
    refs = [dict(ref_id=1, image_id=1, ann_id=11, split='train',
                 sentences=[dict(sent_id=1, raw='x', sent='x', tokens=['x'])],
                 note=_Payload(kind, marker))]
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    with open(path, 'wb') as f:
        pickle.dump(refs, f, protocol=2)
    return path


# --------------------------------------------------------------------------- records
def make_sentence(sent_id: int, text: str, exist: Optional[bool] = None) -> dict:
    """A REFER sentence dict (``tokens``, ``raw``, ``sent_id``, ``sent``; ``exist`` if given)."""
    sent = dict(tokens=text.lower().split(), raw=text, sent_id=sent_id, sent=text.lower())
    if exist is not None:
        sent['exist'] = exist
    return sent


def make_refs(table: Sequence[tuple], anns: Dict[int, dict], with_exist: bool = False
              ) -> List[dict]:
    """REFER ref dicts from a table ``(ref_id, image_id, ann_id, split, sentences)``.

    Sentence ids are ``ref_id * 10 + k``. With ``with_exist`` the sentences are
    ``(text, exist)`` pairs, ``exist`` None leaving the key out.
    """
    refs = []
    for ref_id, image_id, ann_id, split, texts in table:
        sentences = []
        for k, item in enumerate(texts):
            text, exist = item if with_exist else (item, None)
            sentences.append(make_sentence(ref_id * 10 + k, text, exist))
        refs.append(
            dict(sent_ids=[s['sent_id'] for s in sentences],
                 file_name=f'{osp.splitext(coco_file_name(image_id))[0]}_{ann_id}.jpg',
                 ann_id=ann_id,
                 ref_id=ref_id,
                 image_id=image_id,
                 split=split,
                 sentences=sentences,
                 category_id=anns[ann_id]['category_id']))
    return refs


def coco_instances() -> dict:
    """The COCO-style ``instances.json`` content shared by the COCO-based datasets."""
    images = [
        dict(id=i, file_name=coco_file_name(i), height=h, width=w, license=1,
             coco_url='', flickr_url='', date_captured='') for i, h, w in COCO_IMAGES
    ]
    annotations = []
    for ann_id, image_id, cat, iscrowd, seg in COCO_ANNOTATIONS:
        annotations.append(
            dict(id=ann_id, image_id=image_id, category_id=cat, iscrowd=iscrowd,
                 segmentation=seg, area=0.0, bbox=[0.0, 0.0, 1.0, 1.0]))
    return dict(images=images, annotations=annotations, categories=CATEGORIES)


def write_image(path: str, height: int, width: int, seed: int) -> str:
    """Write a random RGB JPEG of the given size."""
    import cv2
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    pixels = np.random.RandomState(seed).randint(0, 256, (height, width, 3), dtype=np.uint8)
    if not cv2.imwrite(path, pixels):
        raise OSError(f'could not write {path}')
    return path


def write_coco_images(root: str) -> None:
    """Write the eight COCO images under ``root/images/mscoco/images/train2014``."""
    for img_id, height, width in COCO_IMAGES:
        write_image(osp.join(root, COCO_IMAGE_DIR, coco_file_name(img_id)), height, width,
                    img_id)


def write_json(obj: Any, path: str) -> str:
    """Write UTF-8 JSON; returns ``path``."""
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    with open(path, 'w', encoding='utf-8') as f:
        json.dump(obj, f, ensure_ascii=False)
    return path


def write_refs(refs: List[dict], path_no_suffix: str, refs_format: str) -> str:
    """Write refs as a Python-2-style pickle (``'p'``) or JSON (``'json'``)."""
    if refs_format == 'p':
        return write_py2_pickle(refs, path_no_suffix + '.p')
    if refs_format == 'json':
        return write_json(refs, path_no_suffix + '.json')
    raise ValueError(f'refs_format must be "p" or "json", got {refs_format!r}')


def _coco_anns_by_id() -> Dict[int, dict]:
    return {ann['id']: ann for ann in coco_instances()['annotations']}


def write_refcoco_family(root: str, refs_format: str = 'p', images: bool = True) -> str:
    """Write RefCOCO (unc), RefCOCO+ (unc), RefCOCOg (umd, google) and COCO images.

    Returns:
        str: ``root``.
    """
    if images:
        write_coco_images(root)
    anns = _coco_anns_by_id()
    for name, files in (('refcoco', [('unc', REFCOCO_UNC)]),
                        ('refcoco+', [('unc', REFCOCO_PLUS_UNC)]),
                        ('refcocog', [('umd', REFCOCOG_UMD), ('google', REFCOCOG_GOOGLE)])):
        write_json(coco_instances(), osp.join(root, name, 'instances.json'))
        for split_by, table in files:
            write_refs(make_refs(table, anns), osp.join(root, name, f'refs({split_by})'),
                       refs_format)
    return root


def write_rrefcoco(root: str, refs_format: str = 'p') -> str:
    """Write R-RefCOCO (unc): sentences with ``exist`` (absent on some)."""
    write_json(coco_instances(), osp.join(root, 'rrefcoco', 'instances.json'))
    write_refs(make_refs(RREFCOCO_UNC, _coco_anns_by_id(), with_exist=True),
               osp.join(root, 'rrefcoco', 'refs(unc)'), refs_format)
    return root


def grefcoco_refs() -> List[dict]:
    """gRefCOCO ref dicts (``ann_id`` and ``category_id`` are lists)."""
    refs = []
    for ref_id, image_id, ann_ids, cats, split, texts in GREFCOCO_UNC:
        sentences = [make_sentence(ref_id * 10 + k, t) for k, t in enumerate(texts)]
        refs.append(
            dict(sent_ids=[s['sent_id'] for s in sentences], file_name=coco_file_name(image_id),
                 ann_id=list(ann_ids), ref_id=ref_id, image_id=image_id, split=split,
                 sentences=sentences, category_id=list(cats)))
    return refs


def write_grefcoco(root: str) -> str:
    """Write gRefCOCO (``grefcoco/grefs(unc).json`` + ``instances.json``)."""
    write_json(coco_instances(), osp.join(root, 'grefcoco', 'instances.json'))
    write_json(grefcoco_refs(), osp.join(root, 'grefcoco', 'grefs(unc).json'))
    return root


def clef_rle_parts(height: int, width: int, boxes: Sequence[tuple]) -> List[dict]:
    """Compressed RLE dicts (``counts`` as str), one per box ``(y0, y1, x0, x1)``."""
    import pycocotools.mask as mask_utils
    parts = []
    for y0, y1, x0, x1 in boxes:
        mask = np.zeros((height, width), dtype=np.uint8)
        mask[y0:y1, x0:x1] = 1
        rle = mask_utils.encode(np.asfortranarray(mask))
        parts.append(dict(size=[int(s) for s in rle['size']], counts=rle['counts'].decode()))
    return parts


def clef_instances() -> dict:
    """RefCLEF ``instances.json``: segmentations are lists of RLE dicts."""
    sizes = {img_id: (h, w) for img_id, h, w, _ in CLEF_IMAGES}
    return dict(
        images=[dict(id=i, file_name=f, height=h, width=w) for i, h, w, f in CLEF_IMAGES],
        annotations=[
            dict(id=a, image_id=i, category_id=c, iscrowd=0,
                 segmentation=clef_rle_parts(*sizes[i], boxes), area=0.0, bbox=[0, 0, 1, 1])
            for a, i, c, boxes in CLEF_ANNOTATIONS
        ],
        categories=CATEGORIES)


def write_refclef(root: str, refs_format: str = 'p') -> str:
    """Write RefCLEF (unc and berkeley) with images under ``images/saiapr_tc-12``."""
    for img_id, height, width, file_name in CLEF_IMAGES:
        write_image(osp.join(root, CLEF_IMAGE_DIR, file_name), height, width, img_id)
    instances = clef_instances()
    write_json(instances, osp.join(root, 'refclef', 'instances.json'))
    anns = {ann['id']: ann for ann in instances['annotations']}
    for split_by, table in (('unc', REFCLEF_UNC), ('berkeley', REFCLEF_BERKELEY)):
        write_refs(make_refs(table, anns), osp.join(root, 'refclef', f'refs({split_by})'),
                   refs_format)
    return root


def write_refer_root(root: str, refs_format: str = 'p') -> str:
    """Write every fixture dataset under ``root``; returns ``root``."""
    write_refcoco_family(root, refs_format)
    write_rrefcoco(root, refs_format)
    write_grefcoco(root)
    write_refclef(root, refs_format)
    return root
