"""Deterministic synthetic referring-segmentation data in the real RefCOCO formats.

:func:`generate_synthetic_refcoco` draws small scenes of coloured shapes and
writes them with the exact on-disk layouts of the public datasets, so that the
real loaders (REFER, G_REFER, the R-RefCOCO reader and this package's
``RefCOCODataset``) read them unchanged::

    out_dir/images/mscoco/images/train2014/COCO_train2014_000000000001.jpg
    out_dir/refcoco/{instances.json, refs(unc).p, refs(unc).json}
    out_dir/refcoco+/{instances.json, refs(unc).p, refs(unc).json}
    out_dir/refcocog/{instances.json, refs(umd).p/.json, refs(google).p/.json}
    out_dir/rrefcoco/{instances.json, refs(unc).p, refs(unc).json}
    out_dir/grefcoco/{instances.json, grefs(unc).json}

Every scene holds 2-6 shapes (5 shapes x 6 colours x 2 sizes). Shapes drawn
later occlude earlier ones, so visible masks can have several parts or holes.
An annotation's ``segmentation`` is exactly the visible region: polygons that
trace the pixel borders (pycocotools rasterises them back to the same pixels)
when the region has no hole, otherwise a compressed RLE with ``iscrowd=1``.

Expressions are small programs (attribute filter, relation to a reference
object, superlative / ordinal, absolute position) evaluated on the scene with a
three-valued resolver: a comparison inside the margin band around its
threshold is "unclear" and makes the whole program invalid. A positive
expression is emitted only if exactly one object clearly satisfies it; the
thresholds a checker should use are the midpoints of the bands (relations:
centroid difference of 5% of the image side; absolute position: 43% of the
side; middle: 17% from the centre; superlatives: clear gap of 8% of the side or
area ratio 1.3).
"""
import json
import math
import os
import os.path as osp
import pickle
import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from ..utils import progress_bar

__all__ = ['generate_synthetic_refcoco']

# ----------------------------------------------------------------- vocabulary

SHAPES: Tuple[str, ...] = ('circle', 'square', 'triangle', 'star', 'hexagon')
CATEGORY_IDS: Dict[str, int] = {name: i + 1 for i, name in enumerate(SHAPES)}
COLORS: Dict[str, Tuple[int, int, int]] = {  # RGB, far apart in hue
    'red': (215, 35, 35),
    'green': (40, 165, 55),
    'blue': (35, 75, 215),
    'yellow': (240, 205, 25),
    'purple': (135, 55, 175),
    'orange': (245, 130, 20),
}
SIZES: Tuple[str, ...] = ('small', 'big')
EXPR_TYPES: Tuple[str, ...] = ('attribute', 'relational', 'superlative',
                               'position')

_SIZE_WORDS = {'small': ('small', 'little'), 'big': ('big', 'large')}
# The attribute vocabulary by kind, for breaking results down by the words a sentence uses
# (tools/analysis_tools/word_breakdown.py).
ATTRIBUTE_WORDS: Dict[str, Tuple[str, ...]] = {
    'colour': tuple(COLORS),
    'shape': SHAPES,
    'size': tuple(w for words in _SIZE_WORDS.values() for w in words),
}
_REL_WORDS = {
    'left': ('left of', 'to the left of'),
    'right': ('right of', 'to the right of'),
    'above': ('above', ),
    'below': ('below', 'under'),
}
_SUP_WORDS = {
    'leftmost': ('leftmost', ),
    'rightmost': ('rightmost', ),
    'topmost': ('topmost', 'highest'),
    'bottommost': ('bottommost', 'lowest'),
    'biggest': ('biggest', 'largest'),
    'smallest': ('smallest', ),
}
_SUP_LONG = {
    'leftmost': ('that is farthest to the left',
                 'that is furthest to the left'),
    'rightmost': ('that is farthest to the right',
                  'that is furthest to the right'),
    'topmost': ('that is closest to the top', ),
    'bottommost': ('that is closest to the bottom', ),
}
_POS_SHORT = {
    'left': 'on the left',
    'right': 'on the right',
    'top': 'at the top',
    'bottom': 'at the bottom',
    'top left': 'in the top left',
    'top right': 'in the top right',
    'bottom left': 'in the bottom left',
    'bottom right': 'in the bottom right',
    'middle': 'in the middle',
}
_POS_LONG = {
    'left': 'on the left side of the image',
    'right': 'on the right side of the image',
    'top': 'at the top of the image',
    'bottom': 'at the bottom of the image',
    'top left': 'in the top left corner of the image',
    'top right': 'in the top right corner of the image',
    'bottom left': 'in the bottom left corner of the image',
    'bottom right': 'in the bottom right corner of the image',
    'middle': 'in the middle of the image',
}
_ORDINALS = {2: 'second', 3: 'third'}
_COUNTS = {2: 'two', 3: 'three', 4: 'four', 5: 'five', 6: 'six'}
_SPATIAL_SUP = ('leftmost', 'rightmost', 'topmost', 'bottommost')
_SIZE_SUP = ('biggest', 'smallest')
_SIDES = ('left', 'right', 'top', 'bottom')

# ----------------------------------------------------------------- geometry

_MIN_SIDE, _MAX_SIDE = 96, 192
# Target shape area as a fraction of min(h, w) ** 2; the ranges are far
# apart so "small" and "big" are obvious whatever the shape.
# RefCOCO referents are large (often a fifth of the image); tiny shapes would leave almost nothing
# but background to learn from.
_AREA_FRACTION = {'small': (0.045, 0.065), 'big': (0.13, 0.18)}
# Shape area / circumradius ** 2, so that equal-size shapes have equal areas.
_AREA_FACTOR = {
    'circle': math.pi,
    'square': 2.0,
    'triangle': 3 * math.sqrt(3) / 4,
    'star': 5 * 0.5 * math.sin(math.radians(36)),  # inner radius 0.5 R
    'hexagon': 3 * math.sqrt(3) / 2,
}
_MIN_VISIBLE_FRACTION = 0.5  # every object keeps half of itself visible
_MIN_VISIBLE_PIXELS = 60
_MIN_PART_PIXELS = 15  # no slivers: each visible part stays recognisable
_INSIDE_PROB = 0.3  # shape placed inside a big one: gives holes
_SPLIT_PROB = 0.4  # shape placed to cut a big one in parts
_PLACE_TRIES = 40
# Inradius / circumradius: how far a shape's centre must stay from a border.
_INRADIUS = {'circle': 1.0, 'square': math.cos(math.pi / 4),
             'triangle': 0.5, 'star': 0.5 * math.cos(math.pi / 5),
             'hexagon': math.cos(math.pi / 6)}
_MAX_SCENE_TRIES = 50

# ----------------------------------------------------------------- margins
# Three-valued comparisons: True beyond the first bound, False beyond the
# second, "unclear" (None) in between. Coordinates are normalised by the
# image width / height.
_REL_TRUE, _REL_FALSE = 0.08, 0.02  # centroid difference
_POS_TRUE, _POS_FALSE = 0.36, 0.5  # distance to the named side
_MID_TRUE, _MID_FALSE = 0.12, 0.22  # max |coordinate - 0.5|
_SUP_GAP = 0.08  # winner vs runner-up (and ordinal neighbours)
_SIZE_RATIO = 1.3  # area ratio winner vs runner-up (visible and full)

_INSTANCES_INFO = {
    'description': 'mmseg_ris synthetic RefCOCO-format shapes',
    'version': '1.0',
    'year': 2024,
    'contributor': 'mmseg_ris',
    'date_created': '2024-01-01',
}

Desc = Tuple[Optional[str], Optional[str], Optional[str]]  # size, color, shape
Program = tuple


@dataclass
class _Shape:
    """A drawn shape while the scene is being built."""
    shape: str
    color: str
    size: str
    rgb: Tuple[int, int, int]
    full: np.ndarray  # bool mask of the whole shape
    visible: np.ndarray  # bool mask, shrinks as later shapes cover it
    center: Tuple[float, float]  # x, y
    radius: float  # circumradius


@dataclass
class _Obj:
    """What the resolver knows about an annotated object."""
    index: int
    ann_id: int
    shape: str
    color: str
    size: str
    nx: float  # visible centroid x / image width
    ny: float  # visible centroid y / image height
    area: int  # visible pixels
    full_area: int  # pixels of the whole shape

    @property
    def attrs(self) -> Desc:
        return (self.size, self.color, self.shape)


@dataclass
class _Scene:
    image_id: int
    height: int
    width: int
    objs: List[_Obj]
    anns: List[dict]
    jpeg: bytes
    stats: Dict[str, int] = field(default_factory=dict)


# ----------------------------------------------------------------- helpers


def _rng(seed: int, stream: int, index: int) -> np.random.Generator:
    """Independent generator per (seed, stream, index) for determinism."""
    return np.random.default_rng([seed, stream, index])


def _pick(rng: np.random.Generator, seq: Sequence):
    return seq[int(rng.integers(len(seq)))]


def _pick_weighted(rng: np.random.Generator, seq: Sequence,
                   weights: Sequence[float]):
    cum = np.cumsum(np.asarray(weights, dtype=np.float64))
    i = int(np.searchsorted(cum, rng.random() * cum[-1], side='right'))
    return seq[min(i, len(seq) - 1)]


def _normalize(raw: str) -> str:
    """REFER's ``sent``: lower case, punctuation removed, single spaces."""
    return ' '.join(re.sub(r'[^a-z0-9 ]', ' ', raw.lower()).split())


def _num_parts(mask: np.ndarray) -> int:
    """Number of 8-connected foreground parts."""
    n, _ = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    return n - 1


def _has_holes(mask: np.ndarray) -> bool:
    """Whether some 4-connected background region is enclosed by the mask."""
    background = np.pad(~mask.astype(bool), 1, constant_values=True)
    n, _ = cv2.connectedComponents(
        background.astype(np.uint8), connectivity=4)
    return n - 1 > 1


def _part_sizes(mask: np.ndarray) -> np.ndarray:
    _, _, stats, _ = cv2.connectedComponentsWithStats(
        mask.astype(np.uint8), connectivity=8)
    return stats[1:, cv2.CC_STAT_AREA]


# ----------------------------------------------------------------- masks


def mask_to_polygons(mask: np.ndarray) -> List[List[float]]:
    """Pixel-exact COCO polygons of a hole-free mask, one per 8-connected part.

    Vertices lie on pixel corners (integer coordinates), the convention under
    which pycocotools rasterises a polygon back to exactly the same pixels.
    They come from ``cv2.findContours`` on the mask upsampled 2x: there a
    pixel ``x`` spans columns ``2x`` and ``2x + 1``, the contour runs through
    the outermost of them, and ``(u + 1) // 2`` maps both to the pixel's left
    and right corners.

    Args:
        mask (np.ndarray): H x W boolean mask without holes.

    Returns:
        list[list[float]]: One flat ``[x0, y0, x1, y1, ...]`` list per part.
    """
    up = np.repeat(np.repeat(mask.astype(np.uint8), 2, axis=0), 2, axis=1)
    contours, _ = cv2.findContours(up, cv2.RETR_EXTERNAL,
                                   cv2.CHAIN_APPROX_SIMPLE)
    return [((c.reshape(-1, 2) + 1) // 2).astype(np.float64).ravel().tolist()
            for c in contours]


def _encode_visible(visible: np.ndarray) -> Tuple[object, int]:
    """COCO segmentation of a visible mask and its ``iscrowd`` flag."""
    h, w = visible.shape
    if _has_holes(visible):
        rle = mask_utils.encode(np.asfortranarray(visible.astype(np.uint8)))
        return {'size': [h, w], 'counts': rle['counts'].decode('ascii')}, 1
    polygons = mask_to_polygons(visible)
    decoded = mask_utils.decode(mask_utils.merge(
        mask_utils.frPyObjects(polygons, h, w))).astype(bool)
    if not np.array_equal(decoded, visible):
        raise RuntimeError('internal error: traced polygons do not '
                           'rasterise back to the visible mask')
    return polygons, 0


# ----------------------------------------------------------------- scenes


def _rasterize(shape: str, cx: float, cy: float, radius: float,
               rotation: float, h: int, w: int) -> np.ndarray:
    canvas = np.zeros((h, w), np.uint8)
    shift = 4  # sub-pixel vertex precision
    scale = 1 << shift
    if shape == 'circle':
        cv2.circle(canvas, (int(round(cx * scale)), int(round(cy * scale))),
                   int(round(radius * scale)), 1, -1, cv2.LINE_8, shift)
        return canvas.astype(bool)
    if shape == 'star':
        angles = np.radians(rotation - 90 + 36 * np.arange(10))
        radii = np.where(np.arange(10) % 2 == 0, radius, 0.5 * radius)
    else:
        n, base = {'square': (4, 45), 'triangle': (3, -90),
                   'hexagon': (6, 0)}[shape]
        angles = np.radians(rotation + base + 360 / n * np.arange(n))
        radii = np.full(n, radius)
    pts = np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)],
                   axis=1)
    pts = np.round(pts * scale).astype(np.int32)
    cv2.fillPoly(canvas, [pts], 1, cv2.LINE_8, shift)
    return canvas.astype(bool)


def _occlusion_ok(shapes: List[_Shape], full: np.ndarray) -> bool:
    """Whether every earlier shape stays well visible under ``full``."""
    for s in shapes:
        if not (s.visible & full).any():
            continue
        vis = s.visible & ~full
        n_vis = int(vis.sum())
        if (n_vis < _MIN_VISIBLE_PIXELS
                or n_vis < _MIN_VISIBLE_FRACTION * s.full.sum()
                or _part_sizes(vis).min() < _MIN_PART_PIXELS):
            return False
    return True


def _try_place(rng: np.random.Generator, shapes: List[_Shape], h: int, w: int,
               colors: Sequence[str],
               shape_names: Sequence[str]) -> Optional[_Shape]:
    """Draw one more shape, or None if no valid spot was found.

    Besides random spots, the shape is sometimes put inside a bigger shape
    (whose visible mask then has a hole) or across another shape so that the
    latter's visible mask falls apart in several parts.
    """
    m = min(h, w)
    # Stars and triangles have parts that a shape over their middle cuts
    # off; only a small compact shape fits inside a big one.
    split_hosts = [s for s in shapes
                   if s.shape in ('star', 'triangle') and s.size == 'big']
    inside_hosts = [s for s in shapes if s.size == 'big']
    u = rng.random()
    mode, hosts = 'random', []
    if split_hosts and u < _SPLIT_PROB:
        mode, hosts = 'split', split_hosts
    elif inside_hosts and u < _SPLIT_PROB + _INSIDE_PROB:
        mode, hosts = 'inside', inside_hosts
    size = 'big' if rng.random() < 0.45 else 'small'
    shape = _pick(rng, shape_names)
    area = rng.uniform(*_AREA_FRACTION[size])
    if mode == 'inside':
        size, area = 'small', _AREA_FRACTION['small'][0]
        compact = [n for n in shape_names if _INRADIUS[n] > 0.6]
        shape = _pick(rng, compact) if compact else shape
    elif mode == 'split':
        size, area = 'small', rng.uniform(*_AREA_FRACTION['small'])
    radius = math.sqrt(area * m * m / _AREA_FACTOR[shape])
    rotation = {
        'circle': 0.0,
        'square': rng.uniform(-15, 15),
        'triangle': rng.uniform(-12, 12),
        'star': rng.uniform(0, 72),
        'hexagon': rng.uniform(0, 60),
    }[shape]
    host, spots = None, None
    if mode != 'random' and hosts:
        host = _pick(rng, hosts)
        if mode == 'inside':
            # The centre must be at least the shape's inradius away from the
            # host's border; containment itself is checked exactly below.
            dist = cv2.distanceTransform(host.visible.astype(np.uint8),
                                         cv2.DIST_L2, 5)
            spots = np.argwhere(dist >= _INRADIUS[shape] * radius + 2)
        else:
            # Centres half-way out from the host's middle, where a shape
            # cuts a corner or an arm off (pixel-grid units).
            ang = rng.uniform(0, 2 * math.pi, _PLACE_TRIES)
            rad = host.radius * rng.uniform(0.3, 0.65, _PLACE_TRIES)
            spots = np.stack([host.center[1] + rad * np.sin(ang),
                              host.center[0] + rad * np.cos(ang)], 1) - 0.5
    if host is None or len(spots) == 0:
        mode, host = 'random', None
    if host is not None:
        colors = [c for c in colors if c != host.color] or colors
    color = _pick(rng, colors)
    fallback = None
    for _ in range(_PLACE_TRIES):
        if mode == 'random':
            cx = rng.uniform(radius + 1, w - radius - 2)
            cy = rng.uniform(radius + 1, h - radius - 2)
        else:
            cy, cx = (float(v) + 0.5
                      for v in spots[int(rng.integers(len(spots)))])
        if not (radius + 1 <= cx <= w - radius - 2
                and radius + 1 <= cy <= h - radius - 2):
            continue
        full = _rasterize(shape, cx, cy, radius, rotation, h, w)
        if mode == 'inside':
            grown = cv2.dilate(full.astype(np.uint8),
                               np.ones((3, 3), np.uint8)).astype(bool)
            if (grown & ~host.visible).any():
                continue
        # Same-coloured shapes must not touch, or they read as one blob.
        grown = cv2.dilate(full.astype(np.uint8),
                           np.ones((3, 3), np.uint8)).astype(bool)
        if any(s.color == color and (s.full & grown).any() for s in shapes):
            continue
        if full.sum() < _MIN_VISIBLE_PIXELS or not _occlusion_ok(shapes, full):
            continue
        if mode == 'split' and _num_parts(host.visible & ~full) < 2:
            # Valid but no cut: keep the first such spot in case none cuts.
            fallback = fallback or (full, cx, cy)
            continue
        break
    else:
        if fallback is None:
            return None
        full, cx, cy = fallback
    jitter = rng.integers(-12, 13, size=3)
    rgb = tuple(int(np.clip(c + j, 0, 255))
                for c, j in zip(COLORS[color], jitter))
    return _Shape(shape, color, size, rgb, full, full.copy(), (cx, cy),
                  radius)


def _render(rng: np.random.Generator, shapes: List[_Shape], h: int,
            w: int) -> bytes:
    """JPEG bytes of the scene on a plain or lightly textured background."""
    img = np.empty((h, w, 3), np.float32)
    img[:] = rng.uniform(200, 240) + rng.uniform(-12, 12, size=3)
    texture = _pick(rng, ('plain', 'noise', 'gradient', 'stripes'))
    if texture == 'noise':
        img += 4 * rng.standard_normal((h, w, 1), dtype=np.float32)
    elif texture in ('gradient', 'stripes'):
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        if texture == 'gradient':
            angle = rng.uniform(0, 2 * math.pi)
            img += (12 * (xx * math.cos(angle) + yy * math.sin(angle)) /
                    max(h, w))[..., None]
        else:
            period = rng.uniform(8, 20)
            img += (5 * np.sin(2 * math.pi * (xx + yy) / period))[..., None]
    for s in shapes:
        img[s.full] = s.rgb
    img += 2 * rng.standard_normal((h, w, 1), dtype=np.float32)
    np.clip(img, 0, 255, out=img)
    bgr = (img[..., ::-1] + 0.5).astype(np.uint8)  # round half up
    ok, buf = cv2.imencode('.jpg', bgr, [cv2.IMWRITE_JPEG_QUALITY, 92])
    if not ok:
        raise RuntimeError('cv2.imencode failed to encode a JPEG image')
    return buf.tobytes()


def _make_scene(rng: np.random.Generator, image_id: int,
                first_ann_id: int) -> _Scene:
    """Draw one image with 2-6 shapes and their visible-mask annotations."""
    for _ in range(_MAX_SCENE_TRIES):
        while True:
            h, w = (int(v) for v in rng.integers(_MIN_SIDE, _MAX_SIDE + 1, 2))
            if h != w:
                break
        n_wanted = int(rng.integers(2, 7))
        # A small palette per image makes repeated colours / shapes common,
        # which is what forces relations, superlatives and multi-targets.
        colors = [str(c) for c in rng.choice(
            list(COLORS), int(rng.integers(2, 5)), replace=False)]
        shape_names = [str(c) for c in rng.choice(
            SHAPES, int(rng.integers(2, 5)), replace=False)]
        shapes: List[_Shape] = []
        for _ in range(n_wanted):
            new = _try_place(rng, shapes, h, w, colors, shape_names)
            if new is None:
                continue
            for s in shapes:
                s.visible &= ~new.full
            shapes.append(new)
        if len(shapes) >= 2:
            break
    else:
        raise RuntimeError(f'could not place 2 shapes in image {image_id}')
    jpeg = _render(rng, shapes, h, w)
    objs, anns = [], []
    stats = {'rle': 0, 'multi_part': 0}
    for k, s in enumerate(shapes):
        ann_id = first_ann_id + k
        segmentation, iscrowd = _encode_visible(s.visible)
        ys, xs = np.nonzero(s.visible)
        area = int(len(xs))
        bbox = [float(xs.min()), float(ys.min()),
                float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]
        stats['rle'] += iscrowd
        stats['multi_part'] += int(_num_parts(s.visible) > 1)
        anns.append({
            'id': ann_id,
            'image_id': image_id,
            'category_id': CATEGORY_IDS[s.shape],
            'segmentation': segmentation,
            'area': float(area),
            'bbox': bbox,
            'iscrowd': iscrowd,
            'attributes': {'color': s.color, 'size': s.size, 'shape': s.shape},
        })
        objs.append(_Obj(k, ann_id, s.shape, s.color, s.size,
                         float(xs.mean() + 0.5) / w, float(ys.mean() + 0.5) / h,
                         area, int(s.full.sum())))
    return _Scene(image_id, h, w, objs, anns, jpeg, stats)


# ----------------------------------------------------------------- resolver


def _three(value: float, true_at: float, false_at: float) -> Optional[bool]:
    """True if ``value >= true_at``, False if ``<= false_at``, else None."""
    if value >= true_at:
        return True
    if value <= false_at:
        return False
    return None


def _and(*values: Optional[bool]) -> Optional[bool]:
    if any(v is False for v in values):
        return False
    if all(v is True for v in values):
        return True
    return None


def _rel_truth(a: _Obj, b: _Obj, rel: str) -> Optional[bool]:
    """Whether ``a`` is ``rel`` (left / right / above / below) of ``b``."""
    d = {'left': b.nx - a.nx, 'right': a.nx - b.nx,
         'above': b.ny - a.ny, 'below': a.ny - b.ny}[rel]
    return _three(d, _REL_TRUE, _REL_FALSE)


def _pos_truth(o: _Obj, region: str) -> Optional[bool]:
    """Whether ``o`` lies in an absolute image region."""
    if region == 'middle':
        m = max(abs(o.nx - 0.5), abs(o.ny - 0.5))
        return _three(-m, -_MID_TRUE, -_MID_FALSE)
    return _and(*(_three(-_side_key(o, p), -_POS_TRUE, -_POS_FALSE)
                  for p in region.split()))


def _side_key(o: _Obj, side: str) -> float:
    """Coordinate that grows away from ``side`` (0 at that side)."""
    if side == 'left':
        return o.nx
    if side == 'right':
        return 1 - o.nx
    if side == 'top':
        return o.ny
    return 1 - o.ny


_SUP_SIDE = {'leftmost': 'left', 'rightmost': 'right', 'topmost': 'top',
             'bottommost': 'bottom'}


class _Resolver:
    """Evaluates expression programs on one scene.

    Programs (``d*`` are ``(size, color, shape)`` descriptions, None = any):

    * ``('attr', d)``: the objects matching ``d``.
    * ``('rel', d, rel, d_ref)``: objects matching ``d`` (the reference
      excluded) that are ``rel`` of the single object matching ``d_ref``.
    * ``('sup', d, key)``: the clear extreme of the objects matching ``d``.
    * ``('ord', d, k, side)``: the clear k-th object from ``side``.
    * ``('pos', d, region)``: objects matching ``d`` inside an image region.
    * ``('count', d, n)``: the objects matching ``d`` if there are ``n``.
    * ``('conj', d_a, d_b)``: two objects, each the only match of its ``d``.

    ``evaluate`` returns the matched object indices, or None when the program
    is unclear (a comparison falls in a margin band, or its reference is not
    unique).
    """

    def __init__(self, objs: List[_Obj]):
        self.objs = objs
        self._filtered: Dict[Desc, List[int]] = {}
        self._unique: Dict[int, List[Desc]] = {}
        self._evaluated: Dict[Program, Optional[List[int]]] = {}
        self.absent: Optional[List[Tuple[Desc, float]]] = None  # cache
        # Truth tables, computed once per scene (speed).
        self._pos = [{region: _pos_truth(o, region) for region in _POS_SHORT}
                     for o in objs]
        self._rel = {(a.index, b.index, rel): _rel_truth(a, b, rel)
                     for a in objs for b in objs if a is not b
                     for rel in _REL_WORDS}

    def filter(self, desc: Desc) -> List[int]:
        """Indices of the objects that have every attribute of ``desc``."""
        found = self._filtered.get(desc)
        if found is None:
            found = [o.index for o in self.objs
                     if all(d is None or d == a for d, a in zip(desc, o.attrs))]
            self._filtered[desc] = found
        return found  # cached: callers must not modify it

    def evaluate(self, prog: Program) -> Optional[List[int]]:
        """Matched object indices (read-only), or None if unclear."""
        if prog not in self._evaluated:
            self._evaluated[prog] = self._evaluate(prog)
        return self._evaluated[prog]

    def _evaluate(self, prog: Program) -> Optional[List[int]]:
        kind = prog[0]
        objs = self.objs
        if kind == 'attr':
            return list(self.filter(prog[1]))
        if kind in ('rel', 'relall'):
            _, desc, rel, ref_desc = prog
            refs = self.filter(ref_desc)
            if len(refs) != 1:
                return None
            out = []
            for i in self.filter(desc):
                if i == refs[0]:
                    continue
                truth = self._rel[i, refs[0], rel]
                if truth is None:
                    return None
                if truth:
                    out.append(i)
            return out
        if kind == 'sup':
            return self._superlative(self.filter(prog[1]), prog[2])
        if kind == 'ord':
            _, desc, k, side = prog
            cands = sorted(self.filter(desc),
                           key=lambda i: _side_key(objs[i], side))
            if len(cands) < k + 1:
                return None
            keys = [_side_key(objs[i], side) for i in cands]
            if (keys[k - 1] - keys[k - 2] < _SUP_GAP
                    or keys[k] - keys[k - 1] < _SUP_GAP):
                return None
            return [cands[k - 1]]
        if kind == 'pos':
            out = []
            for i in self.filter(prog[1]):
                truth = self._pos[i][prog[2]]
                if truth is None:
                    return None
                if truth:
                    out.append(i)
            return out
        if kind == 'count':
            found = self.filter(prog[1])
            return list(found) if len(found) == prog[2] else None
        if kind == 'conj':
            a, b = self.filter(prog[1]), self.filter(prog[2])
            if len(a) != 1 or len(b) != 1 or a == b:
                return None
            return sorted(a + b)
        raise ValueError(f'unknown program kind {kind!r}')

    def _superlative(self, cands: List[int], key: str) -> Optional[List[int]]:
        if len(cands) < 2:
            return None
        objs = self.objs
        if key in _SUP_SIDE:
            order = sorted(cands, key=lambda i: _side_key(objs[i], _SUP_SIDE[key]))
            a, b = (_side_key(objs[i], _SUP_SIDE[key]) for i in order[:2])
            return [order[0]] if b - a >= _SUP_GAP else None
        sign = -1 if key == 'biggest' else 1
        order = sorted(cands, key=lambda i: sign * objs[i].area)
        win, others = objs[order[0]], [objs[i] for i in order[1:]]
        # The visible area (what a checker sees) and the whole shape (what a
        # person judges) must agree, both by a clear ratio.
        if key == 'biggest':
            ok = (win.area >= _SIZE_RATIO * max(o.area for o in others) and
                  win.full_area >= _SIZE_RATIO * max(o.full_area for o in others))
        else:
            ok = (min(o.area for o in others) >= _SIZE_RATIO * win.area and
                  min(o.full_area for o in others) >= _SIZE_RATIO * win.full_area)
        return [order[0]] if ok else None

    @staticmethod
    def descs(obj: _Obj) -> List[Desc]:
        """The 8 descriptions of an object (each attribute kept or not)."""
        return [tuple(a if bits >> j & 1 else None
                      for j, a in enumerate(obj.attrs)) for bits in range(8)]

    def unique_descs(self, i: int) -> List[Desc]:
        """Descriptions that match object ``i`` only, fewest words first."""
        if i not in self._unique:
            found = [d for d in self.descs(self.objs[i])
                     if any(d) and self.filter(d) == [i]]
            self._unique[i] = sorted(found, key=_n_attrs)
        return self._unique[i]


def _n_attrs(desc: Desc) -> int:
    return sum(a is not None for a in desc)


_EXPR_TYPE = {'attr': 'attribute', 'count': 'attribute', 'conj': 'attribute',
              'rel': 'relational', 'relall': 'relational',
              'sup': 'superlative', 'ord': 'superlative', 'pos': 'position'}


def _expr_type(prog: Program) -> str:
    return _EXPR_TYPE[prog[0]]


# ----------------------------------------------------------------- programs

_STYLES = {
    'refcoco': dict(kinds=('attr', 'rel', 'sup', 'ord', 'pos'),
                    sup_keys=_SPATIAL_SUP + _SIZE_SUP, long=False,
                    max_sents=3),
    # RefCOCO+ forbids absolute-location words: no position expressions and
    # no image-frame superlatives / ordinals (leftmost, second from left).
    'refcoco+': dict(kinds=('attr', 'rel', 'sup'), sup_keys=_SIZE_SUP,
                     long=False, max_sents=3),
    'refcocog': dict(kinds=('attr', 'rel', 'sup', 'ord', 'pos'),
                     sup_keys=_SPATIAL_SUP + _SIZE_SUP, long=True,
                     max_sents=2),
}


def _positive_programs(res: _Resolver, t: int) -> List[Program]:
    """Every valid single-target program of object ``t`` (all kinds)."""
    descs = res.descs(res.objs[t])
    out: List[Program] = [('attr', d) for d in res.unique_descs(t)]
    for r in range(len(res.objs)):
        ref_descs = res.unique_descs(r) if r != t else []
        if not ref_descs:
            continue
        for rel in _REL_WORDS:
            for d in descs:
                # Only where the relation is needed to single t out.
                if len(res.filter(d)) >= 2:
                    out.append(('rel', d, rel, ref_descs[0]))
    for key in _SPATIAL_SUP + _SIZE_SUP:
        for d in descs:
            if key not in _SIZE_SUP or d[0] is None:  # no "biggest small"
                out.append(('sup', d, key))
    for side in _SIDES:
        for k in _ORDINALS:
            out += [('ord', d, k, side) for d in descs]
    for region in _POS_SHORT:
        out += [('pos', d, region) for d in descs]
    return [p for p in out if res.evaluate(p) == [t]]


def _weigh(res: _Resolver, progs: List[Program], style: dict
           ) -> Dict[str, List[Tuple[Program, float]]]:
    """Programs allowed by a dataset style, grouped by type, with weights."""
    out: Dict[str, List[Tuple[Program, float]]] = {}
    long = style['long']
    attrs = [_n_attrs(p[1]) for p in progs if p[0] == 'attr']
    fewest = min(attrs) if attrs else 0
    for p in progs:
        kind = p[0]
        if kind not in style['kinds'] or (
                kind == 'sup' and p[2] not in style['sup_keys']):
            continue
        n = _n_attrs(p[1])
        if kind == 'attr':
            # Minimal descriptions mostly, redundant ones sometimes;
            # RefCOCOg prefers wordier ones.
            w = 1.0 + n if long else (3.0 if n == fewest else 1.0)
        elif kind == 'rel':
            w = 1.0 + n if long else 1.0
        elif kind == 'pos':
            # Prefer cases where the position is what disambiguates.
            w = 3.0 if len(res.filter(p[1])) >= 2 else 1.0
        else:
            w = 1.0
        out.setdefault(_expr_type(p), []).append((p, w))
    return out


def _choose(rng: np.random.Generator,
            cands: Dict[str, List[Tuple[Program, float]]],
            n: int) -> List[Program]:
    """Up to ``n`` distinct programs, spread over expression types."""
    types = list(cands)
    order = [types[i] for i in rng.permutation(len(types))]
    chosen: List[Program] = []
    for i in range(n * 2):
        pool = [(p, w) for p, w in cands[order[i % len(order)]]
                if p not in chosen]
        if pool:
            chosen.append(_pick_weighted(rng, [p for p, _ in pool],
                                         [w for _, w in pool]))
        if len(chosen) == n:
            break
    return chosen


# ----------------------------------------------------------------- text


def _noun_phrase(rng: np.random.Generator, desc: Desc,
                 plural: bool = False) -> str:
    size, color, shape = desc
    words = []
    if size is not None:
        words.append(_pick(rng, _SIZE_WORDS[size]))
    if color is not None:
        words.append(color)
    if shape is not None:
        noun = shape
    else:
        # "one" only after an adjective: "the red one", never "the one".
        generic = ('object', 'shape', 'one') if words and not plural else (
            'object', 'shape')
        noun = _pick(rng, generic)
    return ' '.join(words + [noun + ('s' if plural else '')])


def _realize(rng: np.random.Generator, prog: Program, long: bool) -> str:
    """English text of a program (RefCOCO style, or longer RefCOCOg style)."""
    kind = prog[0]
    det = 'the ' if long or rng.random() < 0.65 else ''
    if kind == 'attr':
        np_ = _noun_phrase(rng, prog[1])
        if long:
            return (_pick(rng, ('the ', 'a ', 'there is a ')) + np_ +
                    _pick(rng, ('', ' in the image', ' in the picture')))
        return det + np_
    if kind == 'rel':
        _, desc, rel, ref_desc = prog
        head = _noun_phrase(rng, desc)
        link = _pick(rng, ('that is ', 'which is ', 'which is located ')
                     ) if long else ''
        return (f'{det}{head} {link}{_pick(rng, _REL_WORDS[rel])} the '
                f'{_noun_phrase(rng, ref_desc)}')
    if kind == 'sup':
        _, desc, key = prog
        np_ = _noun_phrase(rng, desc)
        if long and key in _SUP_LONG:
            return f'the {np_} {_pick(rng, _SUP_LONG[key])}'
        text = f'the {_pick(rng, _SUP_WORDS[key])} {np_}'
        return text + ' in the picture' if long else text
    if kind == 'ord':
        _, desc, k, side = prog
        return f'the {_ORDINALS[k]} {_noun_phrase(rng, desc)} from the {side}'
    if kind == 'pos':
        _, desc, region = prog
        np_ = _noun_phrase(rng, desc)
        if long:
            return (f'the {np_} ' + _pick(rng, ('', 'located ')) +
                    _POS_LONG[region])
        return f'{det}{np_} {_POS_SHORT[region]}'
    if kind == 'count':
        _, desc, n = prog
        np_ = _noun_phrase(rng, desc, plural=True)
        if rng.random() < 0.4:
            return 'all ' + _pick(rng, ('', 'the ')) + np_
        if n == 2 and rng.random() < 0.4:
            return 'both ' + np_
        return _pick(rng, ('the ', '')) + f'{_COUNTS[n]} {np_}'
    if kind == 'relall':
        _, desc, rel, ref_desc = prog
        return (f'all {_noun_phrase(rng, desc, plural=True)} ' +
                _pick(rng, ('', 'that are ')) + _pick(rng, _REL_WORDS[rel]) +
                f' the {_noun_phrase(rng, ref_desc)}')
    if kind == 'conj':
        return (f'the {_noun_phrase(rng, prog[1])} and the '
                f'{_noun_phrase(rng, prog[2])}')
    raise ValueError(f'unknown program kind {kind!r}')


def _add_text(texts: List[Tuple[str, str]], raw: str, prog: Program) -> None:
    """Append ``(raw, expr_type)`` unless the same sentence is there."""
    if _normalize(raw) not in [_normalize(r) for r, _ in texts]:
        texts.append((raw, _expr_type(prog)))


def _raw(rng: np.random.Generator, text: str, long: bool) -> str:
    """Annotator-like casing and punctuation around a sentence."""
    if rng.random() < (0.7 if long else 0.35):
        text = text[0].upper() + text[1:]
    if rng.random() < (0.6 if long else 0.25):
        text += '.'
    return text


# ----------------------------------------------------------------- datasets


class _RefFile:
    """Accumulates the refs of one ``refs(<split_by>)`` file."""

    def __init__(self):
        self.refs: List[dict] = []
        self.next_sent_id = 0

    def sentence(self, raw: str, expr_type: str,
                 exist: Optional[bool] = None) -> dict:
        sent = _normalize(raw)
        out = {'sent_id': self.next_sent_id, 'raw': raw, 'sent': sent,
               'tokens': sent.split(), 'expr_type': expr_type}
        if exist is not None:
            out['exist'] = exist
        self.next_sent_id += 1
        return out

    def add(self, image_id: int, ann_id, category_id, split: str,
            sentences: List[dict], no_target: Optional[bool] = None):
        first_ann = ann_id[0] if isinstance(ann_id, list) else ann_id
        ref = {
            'ref_id': len(self.refs),
            'ann_id': ann_id,
            'image_id': image_id,
            'category_id': category_id,
            'split': split,
            'sent_ids': [s['sent_id'] for s in sentences],
            'file_name': f'COCO_train2014_{image_id:012d}_{first_ann}.jpg',
            'sentences': sentences,
        }
        if no_target is not None:
            ref['no_target'] = no_target
        self.refs.append(ref)


def _split_plan(n: int, seed: int, stream: int,
                fractions: Sequence[Tuple[str, float]]) -> List[str]:
    """Split name per image index; every split gets at least one image."""
    counts = [max(1, int(round(f * n))) for _, f in fractions[1:]]
    counts.insert(0, n - sum(counts))
    names = [name for (name, _), c in zip(fractions, counts)
             for _ in range(c)]
    perm = _rng(seed, stream, 0).permutation(n)
    plan = [''] * n
    for name, idx in zip(names, perm):
        plan[int(idx)] = name
    return plan


def _absent_descs(res: _Resolver, target: Optional[_Obj]
                  ) -> Tuple[List[Desc], List[float]]:
    """Descriptions matching no object, with weights; those close to
    ``target`` weigh more (hard negatives: right shape, wrong colour, ...)."""
    if res.absent is None:
        colors = {o.color for o in res.objs}
        shapes = {o.shape for o in res.objs}
        found = []
        for shape in SHAPES:
            for color in COLORS:
                for size in (None, ) + SIZES:
                    d = (size, color, shape)
                    if not res.filter(d):
                        w = 1.0 + (color in colors) + (shape in shapes)
                        found.append((d, w * (0.5 if size else 1.0)))
        found += [((None, c, None), 1.0) for c in COLORS if c not in colors]
        found += [((None, None, s), 1.0) for s in SHAPES if s not in shapes]
        res.absent = found
    descs = [d for d, _ in res.absent]
    weights = [w for _, w in res.absent]
    if target is not None:
        weights = [w + (2.0 if d[2] == target.shape or d[1] == target.color
                        else 0.0) for d, w in res.absent]
    return descs, weights


def _negatives(rng: np.random.Generator, res: _Resolver, t: int,
               n: int) -> List[Tuple[str, str]]:
    """R-RefCOCO negatives: ``n`` texts naming objects absent from the image."""
    absent, weights = _absent_descs(res, res.objs[t])
    refs = [(r, res.unique_descs(r)) for r in range(len(res.objs))]
    refs = [(r, d[0]) for r, d in refs if d]
    out: List[Tuple[str, str]] = []
    for _ in range(n * 4):
        d = _pick_weighted(rng, absent, weights)
        if refs and rng.random() < 0.35:
            _, ref_desc = _pick(rng, refs)
            prog = ('rel', d, _pick(rng, tuple(_REL_WORDS)), ref_desc)
        else:
            prog = ('attr', d)
        if res.evaluate(prog) != [] or res.filter(d):
            raise RuntimeError('internal error: negative expression matches')
        _add_text(out, _realize(rng, prog, long=False), prog)
        if len(out) == n:
            break
    return out


def _multi_target_programs(
        res: _Resolver) -> Dict[Tuple[int, ...], List[Program]]:
    """gRefCOCO multi-target programs grouped by their target set."""
    groups: Dict[Tuple[int, ...], List[Program]] = {}

    def add(prog):
        found = res.evaluate(prog)
        if found is not None and len(found) >= 2:
            key = tuple(sorted(found))
            if prog not in groups.setdefault(key, []):
                groups[key].append(prog)

    descs = sorted({d for o in res.objs for d in res.descs(o)},
                   key=lambda d: tuple('' if a is None else a for a in d))
    for d in descs:
        if any(d):
            add(('count', d, len(res.filter(d))))
    for r in range(len(res.objs)):
        ref_descs = res.unique_descs(r)
        if not ref_descs:
            continue
        for rel in _REL_WORDS:
            for d in descs:
                prog = ('rel', d, rel, ref_descs[0])
                found = res.evaluate(prog)
                if found is not None and len(found) >= 2:
                    groups.setdefault(tuple(sorted(found)), []).append(
                        ('relall', ) + prog[1:])
    uniques = [(i, res.unique_descs(i)) for i in range(len(res.objs))]
    uniques = [(i, d[0]) for i, d in uniques if d]
    for a in range(len(uniques)):
        for b in range(a + 1, len(uniques)):
            add(('conj', uniques[a][1], uniques[b][1]))
    return groups


def _no_target_programs(rng: np.random.Generator,
                        res: _Resolver) -> List[Program]:
    """gRefCOCO no-target programs: absent objects or a relation nobody
    satisfies (the described objects exist, none is where it is said)."""
    progs: List[Program] = []
    for r in range(len(res.objs)):
        ref_descs = res.unique_descs(r)
        if not ref_descs:
            continue
        for rel in _REL_WORDS:
            for d in res.descs(res.objs[(r + 1) % len(res.objs)]):
                prog = ('rel', d, rel, ref_descs[0])
                if (any(d) and res.evaluate(prog) == []
                        and [i for i in res.filter(d) if i != r]):
                    progs.append(prog)
    absent, weights = _absent_descs(res, None)
    for _ in range(3):
        progs.append(('attr', _pick_weighted(rng, absent, weights)))
    return progs


# ----------------------------------------------------------------- main


def _dump_json(path: str, obj) -> str:
    text = json.dumps(obj, separators=(',', ':'))
    with open(path, 'w', encoding='ascii') as f:
        f.write(text)
    return text


def _dump_refs(folder: str, name: str, refs: List[dict],
               pickle_too: bool = True) -> None:
    text = _dump_json(osp.join(folder, f'{name}.json'), refs)
    if pickle_too:
        # Pickle what the JSON decodes to: same content, deterministic bytes,
        # protocol 2 like the original REFER files.
        with open(osp.join(folder, f'{name}.p'), 'wb') as f:
            f.write(pickle.dumps(json.loads(text), protocol=2))


def _ref_stats(refs: List[dict], splits: Sequence[str]) -> dict:
    out = {'splits': {}, 'expr_types': {t: 0 for t in EXPR_TYPES}}
    for split in splits:
        sel = [r for r in refs if r['split'] == split]
        out['splits'][split] = {
            'images': len({r['image_id'] for r in sel}),
            'refs': len(sel),
            'sentences': sum(len(r['sentences']) for r in sel),
        }
    negatives = 0
    for r in refs:
        for s in r['sentences']:
            out['expr_types'][s['expr_type']] += 1
            negatives += s.get('exist', True) is False
    if negatives:
        out['negative_sentences'] = negatives
    return out


def generate_synthetic_refcoco(out_dir: str,
                               num_images: int = 2000,
                               seed: int = 0,
                               progress: bool = False) -> dict:
    """Write a synthetic RefCOCO family (images + annotations) to disk.

    The output is a pure function of ``(num_images, seed)``: running it twice
    gives byte-identical files. Image ``i`` (0-based) has id ``i + 1``;
    annotation ids start at 1,000,001; ref and sentence ids start at 0 in each
    refs file. Images are split (by image) into train / val / testA / testB
    (70 / 10 / 10 / 10 %) for RefCOCO, RefCOCO+, R-RefCOCO and gRefCOCO, into
    train / val / test (80 / 10 / 10 %) for RefCOCOg umd and train / val
    (85 / 15 %) for RefCOCOg google. Every sentence carries ``expr_type``.

    gRefCOCO refs have list ``ann_id`` (``[-1]`` when ``no_target``) and a
    ``category_id`` list aligned with it.

    Args:
        out_dir (str): Output root (created if needed; files are overwritten).
        num_images (int): Number of images, at least 4. Defaults to 2000.
        seed (int): Non-negative random seed. Defaults to 0.
        progress (bool): Show a progress bar. Defaults to False.

    Returns:
        dict: Statistics: ``num_images``, ``seed``, ``instances`` (annotation
        counts, RLE / multi-part counts) and ``datasets``, mapping
        ``name -> split_by -> {'splits': {split: {'images', 'refs',
        'sentences'}}, 'expr_types': {type: count}, ...}``.

    Raises:
        ValueError: If ``num_images`` < 4 or ``seed`` < 0 or either is not an
            integer.
    """
    if isinstance(num_images, bool) or not isinstance(num_images, int) \
            or num_images < 4:
        raise ValueError(f'num_images must be an integer >= 4 (one image per '
                         f'RefCOCO split at least), got {num_images!r}')
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f'seed must be a non-negative integer, got {seed!r}')
    image_dir = osp.join(out_dir, 'images', 'mscoco', 'images', 'train2014')
    os.makedirs(image_dir, exist_ok=True)

    unc_splits = _split_plan(num_images, seed, 100,
                             [('train', .7), ('val', .1), ('testA', .1),
                              ('testB', .1)])
    umd_splits = _split_plan(num_images, seed, 101,
                             [('train', .8), ('val', .1), ('test', .1)])
    google_splits = _split_plan(num_images, seed, 102,
                                [('train', .85), ('val', .15)])
    files = {name: _RefFile() for name in
             ('refcoco', 'refcoco+', 'refcocog', 'rrefcoco', 'grefcoco')}
    umd_refs, google_refs = files['refcocog'], _RefFile()
    images, annotations = [], []
    inst_stats = {'annotations': 0, 'rle_annotations': 0,
                  'multi_part_annotations': 0}
    bar = progress_bar(total=num_images, desc='synthetic images', enable=progress)
    next_ann_id = 1_000_001
    for idx in range(num_images):
        image_id = idx + 1
        scene = _make_scene(_rng(seed, 0, idx), image_id, next_ann_id)
        next_ann_id += len(scene.objs)
        file_name = f'COCO_train2014_{image_id:012d}.jpg'
        with open(osp.join(image_dir, file_name), 'wb') as f:
            f.write(scene.jpeg)
        images.append({'id': image_id, 'file_name': file_name,
                       'height': scene.height, 'width': scene.width,
                       'license': 1})
        annotations.extend(scene.anns)
        inst_stats['annotations'] += len(scene.anns)
        inst_stats['rle_annotations'] += scene.stats['rle']
        inst_stats['multi_part_annotations'] += scene.stats['multi_part']
        res = _Resolver(scene.objs)
        split = unc_splits[idx]
        refcoco_refs = []  # (ann_id, category_id, [(text, type)])
        positives = [_positive_programs(res, o.index) for o in scene.objs]
        for name, stream in (('refcoco', 1), ('refcoco+', 2), ('refcocog', 3)):
            style = _STYLES[name]
            rng = _rng(seed, stream, idx)
            for obj in scene.objs:
                cands = _weigh(res, positives[obj.index], style)
                if not cands:
                    continue
                n = int(rng.integers(1, style['max_sents'] + 1))
                texts = []
                for prog in _choose(rng, cands, n):
                    if res.evaluate(prog) != [obj.index]:
                        raise RuntimeError('internal error: program does not '
                                           'resolve to its target')
                    _add_text(texts, _raw(rng, _realize(
                        rng, prog, style['long']), style['long']), prog)
                cat = CATEGORY_IDS[obj.shape]
                if name == 'refcocog':
                    for ref_file, sp in ((umd_refs, umd_splits[idx]),
                                         (google_refs, google_splits[idx])):
                        ref_file.add(image_id, obj.ann_id, cat, sp, [
                            ref_file.sentence(r, t) for r, t in texts])
                else:
                    out = files[name]
                    out.add(image_id, obj.ann_id, cat, split,
                            [out.sentence(r, t) for r, t in texts])
                if name == 'refcoco':
                    refcoco_refs.append((obj, texts))
        # R-RefCOCO: RefCOCO refs plus negatives naming absent objects.
        rng = _rng(seed, 4, idx)
        rr = files['rrefcoco']
        for obj, texts in refcoco_refs:
            sents = [rr.sentence(r, t) for r, t in texts]
            negs = _negatives(rng, res, obj.index, int(rng.integers(3, 6)))
            sents += [rr.sentence(_raw(rng, text, False), t, exist=False)
                      for text, t in negs]
            rr.add(image_id, obj.ann_id, CATEGORY_IDS[obj.shape], split,
                   sents)
        # gRefCOCO: single-, multi- and no-target refs.
        rng = _rng(seed, 5, idx)
        gr = files['grefcoco']
        for obj, texts in refcoco_refs:
            gr.add(image_id, [obj.ann_id], [CATEGORY_IDS[obj.shape]], split,
                   [gr.sentence(r, t) for r, t in texts], no_target=False)
        groups = _multi_target_programs(res)
        keys = sorted(groups)
        for gi in rng.permutation(len(keys))[:int(rng.integers(1, 4))]:
            members = list(keys[gi])
            progs = groups[keys[gi]]
            picks = [progs[int(j)] for j in rng.permutation(
                len(progs))[:int(rng.integers(1, 3))]]
            texts = []
            for prog in picks:
                _add_text(texts, _raw(rng, _realize(rng, prog, False), False),
                          prog)
            gr.add(image_id, [scene.objs[i].ann_id for i in members],
                   [CATEGORY_IDS[scene.objs[i].shape] for i in members],
                   split, [gr.sentence(r, t) for r, t in texts],
                   no_target=False)
        if rng.random() < 0.6:
            progs = _no_target_programs(rng, res)
            texts = []
            for j in rng.permutation(len(progs))[:int(rng.integers(1, 3))]:
                prog = progs[int(j)]
                _add_text(texts, _raw(rng, _realize(rng, prog, False), False),
                          prog)
            gr.add(image_id, [-1], [-1], split,
                   [gr.sentence(r, t) for r, t in texts], no_target=True)
        bar.update()
    bar.close()

    instances = {
        'info': _INSTANCES_INFO,
        'licenses': [{'id': 1, 'name': 'CC0 1.0 (synthetic)',
                      'url': 'https://creativecommons.org/publicdomain/zero/1.0/'}],
        'images': images,
        'annotations': annotations,
        'categories': [{'id': CATEGORY_IDS[s], 'name': s,
                        'supercategory': 'shape'} for s in SHAPES],
    }
    instances_text = json.dumps(instances, separators=(',', ':'))
    layout = {
        'refcoco': [('refs(unc)', files['refcoco'].refs, True)],
        'refcoco+': [('refs(unc)', files['refcoco+'].refs, True)],
        'refcocog': [('refs(umd)', umd_refs.refs, True),
                     ('refs(google)', google_refs.refs, True)],
        'rrefcoco': [('refs(unc)', files['rrefcoco'].refs, True)],
        'grefcoco': [('grefs(unc)', files['grefcoco'].refs, False)],
    }
    for folder, entries in layout.items():
        path = osp.join(out_dir, folder)
        os.makedirs(path, exist_ok=True)
        with open(osp.join(path, 'instances.json'), 'w', encoding='ascii') as f:
            f.write(instances_text)
        for name, refs, pickle_too in entries:
            _dump_refs(path, name, refs, pickle_too)

    unc = ('train', 'val', 'testA', 'testB')
    grefs = files['grefcoco'].refs
    g_stats = _ref_stats(grefs, unc)
    g_stats['multi_target_refs'] = sum(len(r['ann_id']) > 1 for r in grefs)
    g_stats['no_target_refs'] = sum(r['no_target'] for r in grefs)
    inst_stats['images'] = num_images
    return {
        'num_images': num_images,
        'seed': seed,
        'instances': inst_stats,
        'datasets': {
            'refcoco': {'unc': _ref_stats(files['refcoco'].refs, unc)},
            'refcoco+': {'unc': _ref_stats(files['refcoco+'].refs, unc)},
            'refcocog': {
                'umd': _ref_stats(umd_refs.refs, ('train', 'val', 'test')),
                'google': _ref_stats(google_refs.refs, ('train', 'val')),
            },
            'rrefcoco': {'unc': _ref_stats(files['rrefcoco'].refs, unc)},
            'grefcoco': {'unc': g_stats},
        },
    }
