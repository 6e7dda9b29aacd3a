"""Pack image, mask, tokens and ids of a RIS sample into a SegDataSample."""
import inspect
from typing import Sequence

import numpy as np
import torch
from mmengine.structures import PixelData

from mmseg.datasets.transforms import PackSegInputs
from mmseg.registry import TRANSFORMS

# mmseg's own default meta keys, read from its signature so they follow
# mmseg upgrades.
SEG_META_KEYS = tuple(
    inspect.signature(PackSegInputs.__init__).parameters['meta_keys'].default)
RIS_META_KEYS = ('text', 'ref_id', 'sent_id', 'exist', 'expr_type', 'img_id',
                 'ann_ids', 'text_truncated')
DEFAULT_META_KEYS = SEG_META_KEYS + RIS_META_KEYS
# Token arrays become data fields, not metainfo, so that
# ``SegDataSample.to(device)`` moves them and batches can stack them.
TEXT_DATA_KEYS = ('input_ids', 'attention_mask')


@TRANSFORMS.register_module()
class PackRISInputs(PackSegInputs):
    """Pack a referring-segmentation sample for the model.

    Extends :class:`mmseg.datasets.transforms.PackSegInputs`:

    - ``inputs``: the CHW image tensor;
    - ``data_samples.gt_sem_seg``: ``gt_seg_map`` as int64 ``(1, H, W)``
      (absent when the record has no mask, e.g. pure inference);
    - ``data_samples.gt_category_map``: ``gt_category_map`` (from
      :class:`LoadCategoryMap`) as int64 ``(1, H, W)`` :obj:`PixelData`,
      when present;
    - ``data_samples.input_ids`` / ``data_samples.attention_mask``: int64
      tensors of shape ``(max_length,)``, set as data fields;
    - metainfo: every key of ``meta_keys`` present in the record.

    Args:
        meta_keys (Sequence[str]): Keys copied into the metainfo when
            present. Defaults to mmseg's keys plus ``('text', 'ref_id',
            'sent_id', 'exist', 'expr_type', 'img_id', 'ann_ids',
            'text_truncated')``.
    """

    def __init__(self, meta_keys: Sequence[str] = DEFAULT_META_KEYS) -> None:
        super().__init__(meta_keys=tuple(meta_keys))

    def transform(self, results: dict) -> dict:
        """Pack the record.

        Args:
            results (dict): Pipeline record.

        Returns:
            dict: ``inputs`` (torch.Tensor) and ``data_samples``
            (:obj:`SegDataSample`).

        Raises:
            ValueError: If a token array is not one-dimensional.
        """
        packed = super().transform(results)
        if 'gt_category_map' in results:
            category_map = np.asarray(results['gt_category_map'])
            packed['data_samples'].gt_category_map = PixelData(
                data=torch.from_numpy(category_map.astype(np.int64))[None])
        text_data = {}
        for key in TEXT_DATA_KEYS:
            if key not in results:
                continue
            value = np.asarray(results[key])
            if value.ndim != 1:
                raise ValueError(
                    f'PackRISInputs: {key} must be 1-D (max_length,), got '
                    f'shape {value.shape} (ref_id={results.get("ref_id")!r},'
                    f' sent_id={results.get("sent_id")!r})')
            text_data[key] = torch.from_numpy(value.astype(np.int64))
        if text_data:
            packed['data_samples'].set_data(text_data)
        return packed
