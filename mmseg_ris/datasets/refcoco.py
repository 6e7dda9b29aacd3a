"""RefCOCO-family referring segmentation dataset (REFER annotations)."""
import logging
import os.path as osp
from typing import Dict, List, Optional, Sequence, Set

import numpy as np
from mmengine.dataset import BaseDataset
from mmengine.logging import print_log

from mmseg.registry import DATASETS
from .refer import (ReferAnnotations, default_image_dir, find_refs_file, load_refs,
                    select_ref_ids)


@DATASETS.register_module()
class RefCOCODataset(BaseDataset):
    """RefCOCO, RefCOCO+, RefCOCOg, RefCLEF, R-RefCOCO and gRefCOCO for RIS.

    Reads ``<data_root>/<dataset_name>/refs(<split_by>).p`` (or its ``.json``
    conversion, or gRefCOCO's ``grefs(unc).json``) and ``instances.json`` through
    :class:`ReferAnnotations`. Each record is one referent (``sentence_mode='random'``;
    a fresh sentence is drawn with NumPy's global RNG at every fetch, as LAVT trains,
    and mmengine seeds that RNG per dataloader worker) or one sentence
    (``sentence_mode='all'``, for evaluation). Record keys are those of
    ``docs/design.md``: ``img_path, img_id, ref_id, ann_ids, category_id, mask_anns,
    height, width, sentences, text, sent_id, exist, expr_type, dataset_name, split,
    seg_fields, reduce_zero_label``. ``mask_anns`` holds ``{'id', 'segmentation',
    'iscrowd'}`` of each annotation of the referent, in ``ann_ids`` order. With
    ``with_image_anns=True`` records also hold ``image_anns``: ``{'id', 'category_id',
    'segmentation', 'iscrowd'}`` of every annotation of the image (all objects, referred
    to or not), for :class:`LoadCategoryMap`.

    Args:
        data_root (str): Root of the REFER layout (``images/`` and one folder per dataset).
        dataset_name (str): ``'refcoco'``, ``'refcoco+'``, ``'refcocog'``, ``'refclef'``,
            ``'rrefcoco'``, ``'grefcoco'``, ... Defaults to ``'refcoco'``.
        split_by (str): Partition: ``'unc'``, ``'umd'``, ``'google'``, ``'berkeley'``.
            Defaults to ``'unc'``.
        split (str): ``train``, ``val``, ``test``, ``testA``, ``testB``, ... with REFER's
            rules (``testA`` includes ``testAB`` refs). Defaults to ``'train'``.
        refs_file (str, optional): Refs file overriding the default; relative paths are
            joined with ``data_root``.
        instances_file (str, optional): ``instances.json`` overriding the default;
            relative to ``data_root``.
        data_prefix (dict, optional): ``dict(img_path=...)``, the image folder relative to
            ``data_root``. None picks ``images/mscoco/images/train2014`` (LAVT's layout)
            or ``images/saiapr_tc-12`` for RefCLEF; RefSegformer's layout is
            ``dict(img_path='images/mscoco/train2014')``.
        sentence_mode (str, optional): ``'random'`` (one record per referent, a random
            sentence per fetch) or ``'all'`` (one record per sentence). None means
            ``'random'`` for ``split='train'`` and ``'all'`` otherwise.
        text_key (str): Sentence field used as text: ``'raw'`` (LAVT) or ``'sent'``.
            Defaults to ``'raw'``.
        exclude_images (list[dict], optional): Images to drop, each entry
            ``dict(dataset_name=..., split_by=..., splits=[...])`` (optionally
            ``refs_file=...``): the image ids of those splits, read from their refs files
            under the same ``data_root``, are removed. Used to build the combined
            RefCOCO + RefCOCO+ + G-Ref training set without any evaluation image.
        with_image_anns (bool): Add ``image_anns``, every annotation of the record's
            image, for an auxiliary category segmentation target
            (:class:`LoadCategoryMap`). Defaults to False.
        **kwargs: Other :class:`mmengine.dataset.BaseDataset` arguments (``pipeline``,
            ``test_mode``, ``lazy_init``, ``serialize_data``, ``max_refetch``,
            ``indices``, ``metainfo``, ...).
    """

    METAINFO = dict(classes=('background', 'object'), palette=[[0, 0, 0], [255, 255, 255]])
    SENTENCE_MODES = ('random', 'all')
    EXCLUDE_REQUIRED = ('dataset_name', 'split_by', 'splits')
    EXCLUDE_OPTIONAL = ('refs_file', )

    def __init__(self,
                 data_root: str,
                 dataset_name: str = 'refcoco',
                 split_by: str = 'unc',
                 split: str = 'train',
                 refs_file: Optional[str] = None,
                 instances_file: Optional[str] = None,
                 data_prefix: Optional[Dict[str, str]] = None,
                 sentence_mode: Optional[str] = None,
                 text_key: str = 'raw',
                 exclude_images: Optional[Sequence[dict]] = None,
                 with_image_anns: bool = False,
                 **kwargs) -> None:
        if 'ann_file' in kwargs:
            raise TypeError('RefCOCODataset: use refs_file / instances_file instead of ann_file')
        if not isinstance(data_root, str):
            raise TypeError(f'RefCOCODataset: data_root must be a str, got {data_root!r}')
        for name, value in (('dataset_name', dataset_name), ('split_by', split_by),
                            ('split', split), ('text_key', text_key)):
            if not isinstance(value, str) or not value:
                raise ValueError(f'RefCOCODataset: {name} must be a non-empty str, got '
                                 f'{value!r}')
        if sentence_mode is None:
            sentence_mode = 'random' if split == 'train' else 'all'
        if sentence_mode not in self.SENTENCE_MODES:
            raise ValueError(f'RefCOCODataset: sentence_mode must be one of '
                             f'{self.SENTENCE_MODES} or None, got {sentence_mode!r}')
        if data_prefix is None:
            data_prefix = dict(img_path=default_image_dir(dataset_name))
        elif not isinstance(data_prefix, dict) or 'img_path' not in data_prefix:
            raise ValueError(f'RefCOCODataset: data_prefix must be a dict with "img_path", '
                             f'got {data_prefix!r}')
        self.dataset_name = dataset_name
        self.split_by = split_by
        self.split = split
        self.refs_file = refs_file
        self.instances_file = instances_file
        self.sentence_mode = sentence_mode
        self.text_key = text_key
        self.exclude_images = self._check_exclude_images(exclude_images)
        self.with_image_anns = bool(with_image_anns)
        super().__init__(data_root=data_root, data_prefix=dict(data_prefix), **kwargs)

    @classmethod
    def _check_exclude_images(cls, exclude_images: Optional[Sequence[dict]]) -> List[dict]:
        """Validate ``exclude_images`` entries up front, before any file is read."""
        if exclude_images is None:
            return []
        if not isinstance(exclude_images, (list, tuple)):
            raise TypeError(f'RefCOCODataset: exclude_images must be a list of dicts, got '
                            f'{type(exclude_images).__name__}')
        checked = []
        for index, spec in enumerate(exclude_images):
            where = f'RefCOCODataset: exclude_images[{index}]'
            if not isinstance(spec, dict):
                raise TypeError(f'{where} must be a dict, got {spec!r}')
            missing = [k for k in cls.EXCLUDE_REQUIRED if k not in spec]
            unknown = [k for k in spec if k not in cls.EXCLUDE_REQUIRED + cls.EXCLUDE_OPTIONAL]
            if missing or unknown:
                raise ValueError(f'{where}: missing keys {missing}, unknown keys {unknown}; '
                                 f'expected dict(dataset_name=..., split_by=..., '
                                 f'splits=[...]) and optionally refs_file')
            splits = spec['splits']
            if isinstance(splits, str) or not isinstance(splits, (list, tuple)) or not splits:
                raise ValueError(f'{where}: splits must be a non-empty list of split names, '
                                 f'got {splits!r}')
            checked.append(dict(spec, splits=list(splits)))
        return checked

    def _excluded_image_ids(self, refer: ReferAnnotations) -> Set[int]:
        """Image ids of every split named in ``exclude_images``."""
        excluded: Set[int] = set()
        loaded: Dict[str, Dict[int, dict]] = {osp.abspath(refer.refs_file): refer.refs}
        for spec in self.exclude_images:
            path = find_refs_file(self.data_root, spec['dataset_name'], spec['split_by'],
                                  spec.get('refs_file'))
            key = osp.abspath(path)
            if key not in loaded:
                refs = load_refs(path)
                for index, ref in enumerate(refs):
                    missing = [k for k in ('ref_id', 'image_id', 'split') if k not in ref]
                    if missing:
                        raise ValueError(f'{path}: refs[{index}] lacks {missing} (read for '
                                         f'exclude_images)')
                loaded[key] = {ref['ref_id']: ref for ref in refs}
            refs_by_id = loaded[key]
            for split in spec['splits']:
                ref_ids = select_ref_ids(refs_by_id.values(), split, path)
                excluded.update(refs_by_id[ref_id]['image_id'] for ref_id in ref_ids)
        return excluded

    def load_data_list(self) -> List[dict]:
        """Build the records of the split.

        Returns:
            list[dict]: One record per referent (``'random'``) or per sentence (``'all'``).

        Raises:
            ValueError: If nothing is left after ``exclude_images`` and empty sentences
                are removed, or for malformed annotations (see :class:`ReferAnnotations`).
        """
        refer = ReferAnnotations(self.data_root, self.dataset_name, self.split_by,
                                 refs_file=self.refs_file, instances_file=self.instances_file)
        ref_ids = refer.ref_ids(self.split)
        excluded = self._excluded_image_ids(refer) if self.exclude_images else set()
        img_root = self.data_prefix['img_path']
        image_anns = self._image_anns(refer) if self.with_image_anns else {}

        data_list = []
        images: Set[int] = set()
        removed_images: Set[int] = set()
        removed_refs = refs_without_text = num_sentences = 0
        for ref_id in ref_ids:
            ref = refer.refs[ref_id]
            img_id = ref['image_id']
            if img_id in excluded:
                removed_refs += 1
                removed_images.add(img_id)
                continue
            sentences = refer.ref_sentences(ref_id, self.text_key)
            if not sentences:
                refs_without_text += 1
                continue
            img = refer.imgs[img_id]
            ann_ids = refer.ref_ann_ids(ref_id)
            record = dict(
                img_path=osp.join(img_root, img['file_name']),
                img_id=img_id,
                ref_id=ref_id,
                ann_ids=ann_ids,
                category_id=refer.ref_category_id(ref_id),
                mask_anns=[
                    dict(
                        id=ann_id,
                        segmentation=refer.anns[ann_id]['segmentation'],
                        iscrowd=refer.anns[ann_id].get('iscrowd', 0)) for ann_id in ann_ids
                ],
                height=img['height'],
                width=img['width'],
                sentences=sentences,
                dataset_name=self.dataset_name,
                split=self.split,
                seg_fields=[],
                reduce_zero_label=False)
            if self.with_image_anns:
                record['image_anns'] = image_anns.get(img_id, [])
            images.add(img_id)
            num_sentences += len(sentences)
            if self.sentence_mode == 'random':
                # Filled at every fetch by get_data_info.
                record.update(text=None, sent_id=None, exist=None, expr_type=None)
                data_list.append(record)
            else:
                for sentence in sentences:
                    data_list.append(dict(record, **self._sentence_fields(sentence)))

        source = f'{self.dataset_name} ({self.split_by}) split {self.split!r}'
        summary = (f'RefCOCODataset {source}: {len(data_list)} records '
                   f'(sentence_mode={self.sentence_mode!r}) from '
                   f'{len(ref_ids) - removed_refs - refs_without_text} refs, {num_sentences} '
                   f'sentences, {len(images)} images; read {refer.refs_file}')
        if self.exclude_images:
            summary += (f'; exclude_images removed {len(removed_images)} images '
                        f'({removed_refs} refs) of {len(excluded)} excluded image ids')
        if refs_without_text:
            summary += f'; skipped {refs_without_text} refs whose sentences are all empty'
        print_log(summary, logger='current', level=logging.INFO)
        if not data_list:
            raise ValueError(f'RefCOCODataset {source} is empty after filtering: '
                             f'{len(ref_ids)} refs in {refer.refs_file}, {removed_refs} removed '
                             f'by exclude_images, {refs_without_text} without text')
        return data_list

    @staticmethod
    def _image_anns(refer: ReferAnnotations) -> Dict[int, List[dict]]:
        """Every annotation of every image, with its category, keyed by image id."""
        by_image: Dict[int, List[dict]] = {}
        for ann_id, ann in refer.anns.items():
            if 'image_id' not in ann or 'category_id' not in ann:
                raise ValueError(f'RefCOCODataset: with_image_anns needs image_id and '
                                 f'category_id in every annotation; annotation {ann_id} of '
                                 f'{refer.instances_file} has {sorted(ann)}')
            by_image.setdefault(ann['image_id'], []).append(
                dict(id=ann_id, category_id=ann['category_id'],
                     segmentation=ann['segmentation'], iscrowd=ann.get('iscrowd', 0)))
        return by_image

    @staticmethod
    def _sentence_fields(sentence: dict) -> dict:
        return dict(text=sentence['text'], sent_id=sentence['sent_id'],
                    exist=sentence['exist'], expr_type=sentence['expr_type'])

    def get_data_info(self, idx: int) -> dict:
        """Return record ``idx``; in ``'random'`` mode with a freshly drawn sentence.

        Args:
            idx (int): Record index.

        Returns:
            dict: The record (a copy; safe to modify).
        """
        data_info = super().get_data_info(idx)
        if self.sentence_mode == 'random':
            sentences = data_info['sentences']
            data_info.update(self._sentence_fields(sentences[np.random.choice(len(sentences))]))
        return data_info
