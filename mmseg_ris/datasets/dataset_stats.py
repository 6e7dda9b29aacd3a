"""Statistics of a referring dataset split: the engine of ``tools/analysis_tools/check_dataset.py``."""
import os
import os.path as osp
from collections import Counter
from typing import Dict, List, Optional

import mmcv
import numpy as np

from ..utils import progress_bar
from ..visualization import draw_ris_overlay


def _summary(values: List[float]) -> Dict[str, float]:
    if not values:
        return dict(count=0)
    arr = np.asarray(values, dtype=np.float64)
    return dict(count=int(arr.size), mean=float(arr.mean()), min=float(arr.min()),
                median=float(np.median(arr)), max=float(arr.max()))


def split_statistics(dataset,
                     mask_loader,
                     tokenizer,
                     max_length: int,
                     render_dir: Optional[str] = None,
                     num_render: int = 0,
                     progress: bool = True) -> dict:
    """Count images, referents and sentences of one split and measure masks and token lengths.

    Args:
        dataset: A ``RefCOCODataset`` built with ``sentence_mode='all'`` (one record per sentence).
        mask_loader: A ``LoadRefMask`` transform, applied once per referent.
        tokenizer: A Hugging Face tokenizer (the one of the config's ``TokenizeText``).
        max_length (int): The pipeline's token budget, to count how many expressions get truncated.
        render_dir (str, optional): Where to write ``num_render`` overlay PNGs.
        num_render (int): Number of samples to render, spread evenly over the split.
        progress (bool): Show a progress bar.

    Returns:
        dict: Counts and summaries; broken annotations are listed under ``errors`` instead of stopping
        the scan.
    """
    n = len(dataset)
    images, refs = set(), set()
    types, exist = Counter(), Counter()
    token_lengths, area_fracs, errors = [], [], []
    area_by_ref = {}
    no_target_refs = set()
    render_at = set(np.linspace(0, n - 1, num_render).round().astype(int).tolist()) if num_render and n else set()
    if render_dir and render_at:
        os.makedirs(render_dir, exist_ok=True)
    bar = progress_bar(total=n, desc=f'scan {dataset.split}', enable=progress)
    for idx in range(n):
        info = dataset.get_data_info(idx)
        images.add(info['img_id'])
        refs.add(info['ref_id'])
        types[info.get('expr_type') or 'unknown'] += 1
        exist[bool(info.get('exist', True))] += 1
        # Without truncation: how long the expressions really are.
        token_lengths.append(len(tokenizer(info['text'], add_special_tokens=True)['input_ids']))
        mask = None
        if not info.get('ann_ids'):
            # gRefCOCO no-target expression: nothing to measure, and not an error
            no_target_refs.add(info['ref_id'])
        elif info['ref_id'] not in area_by_ref or idx in render_at:
            try:
                mask = mask_loader.transform(dict(info, exist=True, seg_fields=[]))['gt_seg_map']
                area_by_ref[info['ref_id']] = float(mask.mean())
            except ValueError as err:
                area_by_ref[info['ref_id']] = None
                errors.append(f'ref {info["ref_id"]}: {err}')
        if idx in render_at and mask is not None:
            img = mmcv.imread(info['img_path'])
            shown = mask if info.get('exist', True) else np.zeros_like(mask)
            vis = draw_ris_overlay(img, shown, info['text'],
                                   caption=f'{info.get("expr_type") or ""} ref {info["ref_id"]} '
                                           f'sent {info["sent_id"]}')
            mmcv.imwrite(vis, osp.join(render_dir, f'{dataset.split}_{idx:06d}.png'))
        bar.update()
    bar.close()
    area_fracs = [a for a in area_by_ref.values() if a is not None]
    lengths = np.asarray(token_lengths)
    return dict(
        images=len(images),
        referents=len(refs),
        sentences=n,
        positive_sentences=exist[True],
        negative_sentences=exist[False],
        no_target_referents=len(no_target_refs),
        expression_types=dict(sorted(types.items())),
        mask_area_fraction=_summary(area_fracs),
        token_length=_summary(token_lengths),
        truncated=int((lengths > max_length).sum()) if n else 0,
        max_length=max_length,
        errors=errors)
