"""Rasterise the referent's COCO segmentation into a binary ``gt_seg_map``."""
import numbers
from typing import Dict, List

import numpy as np
import pycocotools.mask as mask_utils
from mmcv.transforms import BaseTransform

from mmseg.registry import TRANSFORMS

RLE = Dict[str, object]


@TRANSFORMS.register_module()
class LoadRefMask(BaseTransform):
    """Load the binary mask of a referring expression from COCO annotations.

    The referent is described by ``results['mask_anns']``, the COCO
    annotations of its object(s). Each annotation's ``segmentation`` may be

    - a list of polygons ``[[x1, y1, x2, y2, ...], ...]`` (one object may have
      several disjoint parts),
    - an RLE dict with compressed ``counts`` (``str`` / ``bytes``) or
      uncompressed ``counts`` (a list of run lengths, as COCO crowd
      annotations store them),
    - a list of RLE dicts (RefCLEF).

    Several annotations (gRefCOCO multi-target expressions) are merged by
    union. A sentence with ``exist=False`` (R-RefCOCO negatives, gRefCOCO
    no-target expressions) gets an all-zero map without looking at
    ``mask_anns``.

    Required keys:

    - mask_anns (list[dict])
    - height (int)
    - width (int)

    Optional keys (used for checks and error messages):

    - exist (bool): Defaults to True when absent.
    - ref_id (int), ann_ids (list[int]), img_path (str)
    - ori_shape (tuple): The shape of the loaded image, if one was loaded.

    Added keys:

    - gt_seg_map (np.uint8, (height, width), values 0 / 1)
    - seg_fields (list): ``'gt_seg_map'`` is appended.

    Args:
        polygon_mode (str): How the polygons of one annotation are combined.
            ``'union'`` (default) sets every pixel covered by any polygon.
            ``'sum'`` reproduces LAVT / MagNet ground truth: the polygons (or
            RLEs) of one annotation are decoded separately and summed, and
            only pixels whose sum is exactly 1 are foreground, so pixels
            covered by two overlapping parts become background. Use it to
            compare numbers with those repositories; annotations are still
            merged by union.
        allow_empty (bool): Whether a positive sentence (``exist=True``) may
            have an empty mask. When False (default) an empty mask raises
            ``ValueError``, since it usually means broken annotations.
            Defaults to False.
    """

    POLYGON_MODES = ('union', 'sum')

    def __init__(self,
                 polygon_mode: str = 'union',
                 allow_empty: bool = False) -> None:
        if polygon_mode not in self.POLYGON_MODES:
            raise ValueError(f'LoadRefMask: polygon_mode must be one of '
                             f'{self.POLYGON_MODES}, got {polygon_mode!r}')
        self.polygon_mode = polygon_mode
        self.allow_empty = allow_empty

    def transform(self, results: dict) -> dict:
        """Rasterise ``mask_anns`` into ``results['gt_seg_map']``.

        Args:
            results (dict): The pipeline record (see the class docstring).

        Returns:
            dict: ``results`` with ``gt_seg_map`` and updated ``seg_fields``.

        Raises:
            KeyError: If a required key is missing.
            ValueError: If the segmentation is malformed, the loaded image's
                size disagrees with the annotation, or a positive sentence
                has an empty mask while ``allow_empty`` is False.
        """
        ids = self._describe(results)
        for key in ('mask_anns', 'height', 'width'):
            if key not in results:
                raise KeyError(f'LoadRefMask: key {key!r} missing from the '
                               f'record ({ids})')
        height, width = results['height'], results['width']
        valid = all(
            isinstance(v, numbers.Integral) and v > 0 for v in (height, width))
        if not valid:
            raise ValueError(f'LoadRefMask: height and width must be '
                             f'positive ints, got {height!r} x {width!r} '
                             f'({ids})')
        height, width = int(height), int(width)
        self._check_image_size(results, height, width)

        if results.get('exist', True):
            mask = self._decode_anns(results['mask_anns'], height, width, ids)
            if not self.allow_empty and not mask.any():
                raise ValueError(
                    f'LoadRefMask: the mask of a positive sentence is empty '
                    f'({ids}); fix the annotations, mark the sentence '
                    f'exist=False, or set allow_empty=True')
        else:
            mask = np.zeros((height, width), dtype=np.uint8)

        self._set_label_map(results, 'gt_seg_map', mask)
        return results

    @staticmethod
    def _set_label_map(results: dict, key: str, label_map: np.ndarray) -> None:
        """Store a label map and list it in ``seg_fields`` (resized and flipped as labels)."""
        results[key] = label_map
        # Copy rather than append in place: the list may be shared with the
        # dataset's cached record.
        seg_fields = list(results.get('seg_fields', []))
        if key not in seg_fields:
            seg_fields.append(key)
        results['seg_fields'] = seg_fields

    @staticmethod
    def _describe(results: dict) -> str:
        """Identify the record in error messages."""
        return (f'img_path={results.get("img_path")!r}, '
                f'ref_id={results.get("ref_id")!r}, '
                f'ann_ids={results.get("ann_ids")!r}')

    @staticmethod
    def _check_image_size(results: dict, height: int, width: int) -> None:
        """Compare the loaded image (if any) with the annotated size."""
        ori_shape = results.get('ori_shape')
        if ori_shape is None:
            return
        if tuple(ori_shape[:2]) != (height, width):
            raise ValueError(
                f'LoadRefMask: image {results.get("img_path")!r} has size '
                f'(h, w)={tuple(ori_shape[:2])} but its annotation says '
                f'(h, w)={(height, width)} (ref_id={results.get("ref_id")!r},'
                f' ann_ids={results.get("ann_ids")!r}); the image file does '
                f'not match instances.json')

    def _decode_anns(self, mask_anns: List[dict], height: int, width: int,
                     ids: str) -> np.ndarray:
        """Decode and merge all annotations of one referent.

        Args:
            mask_anns (list[dict]): COCO annotations with ``segmentation``.
            height (int): Image height.
            width (int): Image width.
            ids (str): Record description for error messages.

        Returns:
            np.ndarray: uint8 (height, width) 0/1 mask.
        """
        if not isinstance(mask_anns, (list, tuple)):
            raise ValueError(f'LoadRefMask: mask_anns must be a list of '
                             f'annotation dicts, got '
                             f'{type(mask_anns).__name__} ({ids})')
        mask = np.zeros((height, width), dtype=bool)
        all_rles = []
        for index, ann in enumerate(mask_anns):
            where = f'{ids}, mask_anns[{index}]'
            if isinstance(ann, dict) and 'id' in ann:
                where += f' (annotation id {ann["id"]!r})'
            if not isinstance(ann, dict) or 'segmentation' not in ann:
                raise ValueError(f'LoadRefMask: annotation without a '
                                 f'"segmentation" field ({where})')
            rles = self._to_rles(ann['segmentation'], height, width, where)
            if self.polygon_mode == 'union':
                all_rles.extend(rles)
            else:
                mask |= self._sum_exactly_one(rles)
        if all_rles:
            merged = mask_utils.merge(all_rles, intersect=False)
            mask |= mask_utils.decode(merged).astype(bool)
        return mask.astype(np.uint8)

    @staticmethod
    def _sum_exactly_one(rles: List[RLE]) -> np.ndarray:
        """LAVT's rule: decode each part, sum them, keep pixels equal to 1."""
        total = None
        for rle in rles:
            part = mask_utils.decode(rle).astype(np.int32)
            total = part if total is None else total + part
        return total == 1

    def _to_rles(self, segmentation: object, height: int, width: int,
                 where: str) -> List[RLE]:
        """Convert one annotation's segmentation into compressed RLEs.

        Args:
            segmentation: Polygons, an RLE dict or a list of RLE dicts.
            height (int): Image height.
            width (int): Image width.
            where (str): Annotation description for error messages.

        Returns:
            list[dict]: One compressed RLE per polygon / RLE part.
        """
        if isinstance(segmentation, dict):
            return [self._check_rle(segmentation, height, width, where)]
        if not isinstance(segmentation, (list, tuple)) or not segmentation:
            raise ValueError(
                f'LoadRefMask: segmentation must be a non-empty list of '
                f'polygons, an RLE dict or a list of RLE dicts, got '
                f'{_short(segmentation)} ({where})')
        if all(isinstance(part, dict) for part in segmentation):
            return [
                self._check_rle(part, height, width, f'{where}, part {i}')
                for i, part in enumerate(segmentation)
            ]
        polygons = [
            self._check_polygon(part, f'{where}, polygon {i}')
            for i, part in enumerate(segmentation)
        ]
        # One polygon per call keeps every part separate for 'sum' mode.
        return [
            mask_utils.frPyObjects([polygon], height, width)[0]
            for polygon in polygons
        ]

    @staticmethod
    def _check_polygon(polygon: object, where: str) -> List[float]:
        """Validate one polygon ``[x1, y1, x2, y2, ...]``."""
        # Not collections.abc.Sequence, which str / bytes would pass.
        is_sequence = isinstance(polygon, (list, tuple, np.ndarray))
        if not is_sequence:
            raise ValueError(f'LoadRefMask: a polygon must be a flat list of '
                             f'coordinates, got {_short(polygon)} ({where})')
        try:
            coords = np.asarray(polygon, dtype=np.float64)
        except (TypeError, ValueError) as error:
            raise ValueError(f'LoadRefMask: polygon coordinates must be '
                             f'numbers, got {_short(polygon)} ({where})') \
                from error
        if coords.ndim != 1 or not np.isfinite(coords).all():
            raise ValueError(f'LoadRefMask: a polygon must be a flat list of '
                             f'finite numbers, got {_short(polygon)} '
                             f'({where})')
        if coords.size % 2:
            raise ValueError(f'LoadRefMask: polygon has an odd number of '
                             f'coordinates ({coords.size}) ({where})')
        # pycocotools would read a 4-value list as a bbox, so reject it here.
        if coords.size < 6:
            raise ValueError(f'LoadRefMask: polygon has {coords.size // 2} '
                             f'points, at least 3 are needed ({where})')
        return coords.tolist()

    @staticmethod
    def _check_rle(rle: object, height: int, width: int, where: str) -> RLE:
        """Validate an RLE dict and return it in compressed form."""
        if not isinstance(rle, dict) or 'counts' not in rle \
                or 'size' not in rle:
            raise ValueError(f'LoadRefMask: an RLE must be a dict with '
                             f'"counts" and "size", got {_short(rle)} '
                             f'({where})')
        size = rle['size']
        size_ok = isinstance(size,
                             (list, tuple)) and list(size) == [height, width]
        if not size_ok:
            raise ValueError(f'LoadRefMask: RLE size {size!r} does not match '
                             f'the image (h, w)={(height, width)} ({where})')
        counts = rle['counts']
        if isinstance(counts, (list, tuple)):
            # Uncompressed RLE (COCO crowd): run lengths must cover the image.
            valid = all(
                isinstance(c, numbers.Integral) and c >= 0 for c in counts)
            if not valid:
                raise ValueError(f'LoadRefMask: uncompressed RLE counts must '
                                 f'be non-negative ints ({where})')
            if sum(counts) != height * width:
                raise ValueError(
                    f'LoadRefMask: uncompressed RLE counts sum to '
                    f'{sum(counts)}, expected h*w={height * width} ({where})')
            return mask_utils.frPyObjects(
                dict(counts=list(counts), size=[height, width]), height, width)
        if isinstance(counts, (str, bytes)):
            return dict(counts=counts, size=[height, width])
        raise ValueError(f'LoadRefMask: RLE counts must be a str/bytes '
                         f'(compressed) or a list of ints (uncompressed), got '
                         f'{type(counts).__name__} ({where})')

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(polygon_mode='
                f'{self.polygon_mode!r}, allow_empty={self.allow_empty})')


def _short(value: object, limit: int = 80) -> str:
    """``repr`` of a value, cut to ``limit`` characters for error messages."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + '...'


@TRANSFORMS.register_module()
class LoadCategoryMap(LoadRefMask):
    """Rasterise every object of the image into a category map.

    A target for auxiliary category segmentation (a decode head's
    ``category_aux`` or :class:`CategoryAuxHead`): each pixel holds the COCO ``category_id`` of
    the object covering it, 0 where none does. Where objects overlap, the
    smaller one is painted last and wins, so small objects in front of or on
    large ones (a cup on a table) keep their pixels. Crowd annotations are
    painted like the others. The record needs ``image_anns`` (dataset
    option ``with_image_anns=True``). Polygons, RLEs and their checks are
    :class:`LoadRefMask`'s.

    Required keys:

    - image_anns (list[dict]): ``{'id', 'category_id', 'segmentation'}``.
    - height (int), width (int)

    Added keys:

    - gt_category_map (np.uint8, (height, width))
    - seg_fields (list): ``'gt_category_map'`` is appended, so resizing and
      flipping transforms treat it as a label map (nearest neighbour).

    Raises:
        KeyError: If ``image_anns``, ``height`` or ``width`` is missing.
        ValueError: If a ``category_id`` is not an int in [1, 254] (0 is the
            background and 255 mmseg's ignore index) or a segmentation is
            malformed.
    """

    MAX_CATEGORY_ID = 254

    def __init__(self) -> None:
        super().__init__(polygon_mode='union', allow_empty=True)

    def transform(self, results: dict) -> dict:
        """Paint ``image_anns`` into ``results['gt_category_map']``.

        Args:
            results (dict): The pipeline record (see the class docstring).

        Returns:
            dict: ``results`` with ``gt_category_map`` and updated
            ``seg_fields``.
        """
        ids = self._describe(results)
        for key in ('image_anns', 'height', 'width'):
            if key not in results:
                hint = (' (build the dataset with with_image_anns=True)'
                        if key == 'image_anns' else '')
                raise KeyError(f'LoadCategoryMap: key {key!r} missing from '
                               f'the record ({ids}){hint}')
        height, width = int(results['height']), int(results['width'])
        self._check_image_size(results, height, width)
        painted = []
        for index, ann in enumerate(results['image_anns']):
            where = f'{ids}, image_anns[{index}]'
            if isinstance(ann, dict) and 'id' in ann:
                where += f' (annotation id {ann["id"]!r})'
            category = ann.get('category_id') if isinstance(ann, dict) else None
            valid = (isinstance(category, numbers.Integral)
                     and not isinstance(category, bool)
                     and 1 <= category <= self.MAX_CATEGORY_ID)
            if not valid:
                raise ValueError(f'LoadCategoryMap: category_id must be an '
                                 f'int in [1, {self.MAX_CATEGORY_ID}], got '
                                 f'{_short(category)} ({where})')
            mask = self._decode_anns([ann], height, width, where).astype(bool)
            painted.append((int(mask.sum()), int(category), mask))
        category_map = np.zeros((height, width), dtype=np.uint8)
        # Largest first: smaller objects are painted over larger ones.
        for _, category, mask in sorted(painted, key=lambda p: -p[0]):
            category_map[mask] = category
        self._set_label_map(results, 'gt_category_map', category_map)
        return results

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}()'
