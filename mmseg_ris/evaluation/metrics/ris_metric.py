"""RISMetric: overall IoU, mean IoU and precision at IoU thresholds."""
import json
import logging
import math
import os.path as osp
from fractions import Fraction
from numbers import Integral
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from mmengine.dist import get_rank
from mmengine.evaluator import BaseMetric
from mmengine.logging import print_log
from mmengine.utils import mkdir_or_exist
from mmseg.registry import METRICS
from PIL import Image
from prettytable import PrettyTable

# Thresholds are read as decimals: 0.1 * 7 (= 0.7000000000000001) means 0.7,
# so an IoU of exactly 7/10 counts at P@0.7.
_MAX_THRESHOLD_DENOMINATOR = 10**6
_RESOLUTION_KEYS = {'input': 'img_shape', 'original': 'ori_shape'}


def _builtin(value: Any) -> Any:
    """Turn an id or flag into a JSON-friendly Python scalar.

    Args:
        value (Any): A metainfo value (int, numpy/torch scalar, str, None).

    Returns:
        Any: ``None``, ``bool``, ``int``, ``float`` or ``str``.
    """
    if value is None or isinstance(value, (bool, str, float)):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, Integral):
        return int(value)
    if isinstance(value, (np.generic, torch.Tensor)) and value.ndim == 0:
        return value.item()
    return str(value)


@METRICS.register_module()
class RISMetric(BaseMetric):
    """Referring image segmentation metric: oIoU, mIoU and P@X.

    For every sentence, :meth:`process` keeps the intersection ``I`` and the
    union ``U`` of the binary prediction and ground truth (pixels whose
    ground truth is ``ignore_index`` are left out) together with the ids.
    Per-sentence values, never per-rank sums, go through
    ``BaseMetric.collect_results``, so the figures are exact for any number
    of processes. :meth:`compute_metrics` then gives, in percent:

    * ``oIoU``: overall IoU, ``sum(I) / sum(U)``;
    * ``mIoU``: mean over sentences of ``I / U``, where a sentence with
      ``U == 0`` scores 0 (LAVT's convention);
    * ``P@t``: share of sentences whose IoU is at least ``t`` (compared
      exactly in integers, so ``I / U == t`` counts);
    * ``num_sentences`` and ``num_skipped_negatives``;
    * per value ``g`` of the metainfo key ``group_by``: ``oIoU_g``,
      ``mIoU_g`` and ``num_sentences_g``.

    Sentences with ``exist=False`` (R-RefCOCO negatives, which have no
    referent) are not part of this protocol: they are counted, reported and
    left out of every figure.

    With the default prefix the logged names read ``ris/oIoU``,
    ``ris/mIoU``, ``ris/P@0.5`` ... (use ``save_best='ris/oIoU'``).

    Args:
        thresholds (Sequence[float]): IoU thresholds in (0, 1] for
            precision. Defaults to (0.5, 0.6, 0.7, 0.8, 0.9).
        ignore_index (int): Ground-truth value of pixels that are not scored.
            Defaults to 255.
        eval_resolution (str, optional): ``'input'``: prediction and ground
            truth must have the resized input size ``img_shape`` (as LAVT and
            MagNet score); ``'original'``: both must have ``ori_shape``;
            ``None``: they only have to agree. Defaults to None.
        group_by (str, optional): Metainfo key whose values get their own
            figures (samples where it is missing or None are only in the
            totals). None disables the breakdown. Defaults to 'expr_type'.
        output_dir (str, optional): Folder for ``results.json`` (all figures
            at full precision, settings) and ``per_sentence.jsonl`` (ids,
            ``exist``, group, ``I``, ``U``, ``IoU``, mask file per sentence).
            Defaults to None.
        keep_results (bool): Also keep every prediction in ``output_dir`` as a
            PNG (0/255) named ``{ref_id}_{sent_id}.png`` (``{sample_idx}.png``
            or ``rank{r}_{n}.png`` when the ids are missing). ``tools/test.py
            --out DIR`` sets it with ``output_dir``. Defaults to False.
        format_only (bool): Only write the prediction PNGs to ``output_dir``
            (no ground truth is read) and return no figures. Defaults to
            False.
        collect_device (str): Device used to gather results over ranks,
            ``'cpu'`` or ``'gpu'``. Defaults to 'cpu'.
        prefix (str, optional): Prefix of the metric names; None uses
            ``'ris'``. Defaults to None.
        **kwargs: Passed on to :class:`mmengine.evaluator.BaseMetric`
            (e.g. ``collect_dir``).

    Examples:
        >>> val_evaluator = dict(type='RISMetric', eval_resolution='input')
    """

    default_prefix: Optional[str] = 'ris'

    def __init__(self,
                 thresholds: Sequence[float] = (0.5, 0.6, 0.7, 0.8, 0.9),
                 ignore_index: int = 255,
                 eval_resolution: Optional[str] = None,
                 group_by: Optional[str] = 'expr_type',
                 output_dir: Optional[str] = None,
                 keep_results: bool = False,
                 format_only: bool = False,
                 collect_device: str = 'cpu',
                 prefix: Optional[str] = None,
                 **kwargs) -> None:
        super().__init__(
            collect_device=collect_device, prefix=prefix, **kwargs)
        if eval_resolution is not None and \
                eval_resolution not in _RESOLUTION_KEYS:
            raise ValueError(
                'RISMetric: eval_resolution must be None, "input" or '
                f'"original", got {eval_resolution!r}')
        if (keep_results or format_only) and not output_dir:
            raise ValueError(
                'RISMetric: keep_results=True and format_only=True write '
                'prediction PNGs and need output_dir')
        self.thresholds: List[Tuple[str, Fraction]] = []
        for t in thresholds:
            if isinstance(t, bool) or not isinstance(
                    t, (int, float, np.floating)) or not 0 < t <= 1:
                raise ValueError('RISMetric: thresholds must be numbers in '
                                 f'(0, 1], got {t!r} in {thresholds!r}')
            frac = Fraction(
                float(t)).limit_denominator(_MAX_THRESHOLD_DENOMINATOR)
            name = f'P@{float(frac)}'
            if name in [n for n, _ in self.thresholds]:
                raise ValueError(
                    f'RISMetric: threshold {t!r} is given twice in '
                    f'{thresholds!r}')
            self.thresholds.append((name, frac))
        self.ignore_index = ignore_index
        self.eval_resolution = eval_resolution
        self.group_by = group_by
        self.output_dir = output_dir
        self.keep_results = keep_results
        self.format_only = format_only
        self._num_unnamed = 0
        if output_dir:
            # Every rank writes its own PNGs, so every rank makes the folder.
            mkdir_or_exist(output_dir)

    def process(self, data_batch: Any, data_samples: Sequence[dict]) -> None:
        """Keep I, U and the ids of every sentence of a batch.

        Args:
            data_batch (Any): The batch from the dataloader (unused).
            data_samples (Sequence[dict]): ``SegDataSample.to_dict()`` of
                every sample: ``pred_sem_seg['data']`` and
                ``gt_sem_seg['data']`` of shape (1, H, W), and the metainfo
                keys ``img_path``, ``ref_id``, ``sent_id``, ``exist``, the
                ``group_by`` key and ``img_shape``/``ori_shape``.
        """
        for sample in data_samples:
            record = dict(
                img_path=_builtin(sample.get('img_path')),
                ref_id=_builtin(sample.get('ref_id')),
                sent_id=_builtin(sample.get('sent_id')),
                # R-RefCOCO: a sentence without the flag has a referent.
                exist=(sample.get('exist') is None
                       or bool(sample.get('exist'))),
                group=(_builtin(sample.get(self.group_by))
                       if self.group_by else None),
                mask=None)
            pred = self._mask(sample, 'pred_sem_seg', record)
            bad_pred = (pred != 0) & (pred != 1)
            if bad_pred.any():
                raise ValueError(
                    f'RISMetric: {self._describe(record)}: pred_sem_seg must '
                    'hold 0/1 labels, found '
                    f'{torch.unique(pred[bad_pred])[:5].tolist()}')
            if self.keep_results or self.format_only:
                record['mask'] = self._write_mask(pred, sample, record)
            if self.format_only:
                self.results.append(record)
                continue
            gt = self._mask(sample, 'gt_sem_seg', record)
            self._check_shapes(
                tuple(pred.shape), tuple(gt.shape), sample, record)
            valid = gt != self.ignore_index
            bad_gt = valid & (gt != 0) & (gt != 1)
            if bad_gt.any():
                raise ValueError(
                    f'RISMetric: {self._describe(record)}: gt_sem_seg must '
                    f'hold 0/1 labels or ignore_index={self.ignore_index}, '
                    f'found {torch.unique(gt[bad_gt])[:5].tolist()}')
            pred_fg = (pred == 1) & valid
            gt_fg = gt == 1
            record['I'] = int((pred_fg & gt_fg).sum().item())
            record['U'] = int((pred_fg | gt_fg).sum().item())
            self.results.append(record)

    def compute_metrics(self, results: list) -> Dict[str, float]:
        """Aggregate the per-sentence records of all ranks.

        Args:
            results (list): The records of :meth:`process`, gathered over
                ranks.

        Returns:
            dict[str, float]: ``oIoU``, ``mIoU``, ``P@t`` (percent, rounded
            to 2 decimals), ``num_sentences``, ``num_skipped_negatives`` and
            the per-group ``oIoU_g``, ``mIoU_g``, ``num_sentences_g``; an
            empty dict when ``format_only``.
        """
        if self.format_only:
            print_log(
                f'RISMetric: wrote {len(results)} prediction masks to '
                f'{self.output_dir} (format_only=True, nothing scored)',
                logger='current')
            return {}
        positives = [r for r in results if r['exist']]
        num_skipped = len(results) - len(positives)
        if num_skipped:
            print_log(
                f'RISMetric: {num_skipped} of {len(results)} sentences have '
                'exist=False (no referent) and are left out of oIoU, mIoU '
                'and P@X',
                logger='current')
        if not positives:
            print_log(
                'RISMetric: no sentence with exist=True was evaluated; every '
                'figure is NaN',
                logger='current',
                level=logging.WARNING)
        overall = self._summarize(positives)
        groups: Dict[str, List[dict]] = {}
        for r in positives:
            if r['group'] is not None:
                groups.setdefault(str(r['group']), []).append(r)
        per_group = {g: self._summarize(groups[g]) for g in sorted(groups)}

        metrics: Dict[str, float] = dict(overall)
        metrics['num_skipped_negatives'] = num_skipped
        for g, summary in per_group.items():
            metrics[f'oIoU_{g}'] = summary['oIoU']
            metrics[f'mIoU_{g}'] = summary['mIoU']
            metrics[f'num_sentences_{g}'] = summary['num_sentences']

        self._log_table(overall, per_group)
        if self.output_dir:
            self._dump(results, overall, per_group, num_skipped)
        return {
            k: round(v, 2) if isinstance(v, float) else v
            for k, v in metrics.items()
        }

    def _summarize(self, records: List[dict]) -> Dict[str, float]:
        """Compute the figures of one set of sentences at full precision.

        Args:
            records (list[dict]): Records with ``I`` and ``U``.

        Returns:
            dict[str, float]: ``num_sentences``, ``oIoU``, ``mIoU`` and every
            ``P@t`` in percent (NaN for an empty set).
        """
        n = len(records)
        summary: Dict[str, float] = dict(num_sentences=n)
        if n == 0:
            summary.update(oIoU=math.nan, mIoU=math.nan)
            summary.update({name: math.nan for name, _ in self.thresholds})
            return summary
        sum_i = sum(r['I'] for r in records)
        sum_u = sum(r['U'] for r in records)
        summary['oIoU'] = 100.0 * sum_i / sum_u if sum_u else 0.0
        ious = [r['I'] / r['U'] if r['U'] else 0.0 for r in records]
        summary['mIoU'] = 100.0 * math.fsum(ious) / n
        for name, frac in self.thresholds:
            # I / U >= p / q  <=>  I * q >= p * U, exact in integers.
            hits = sum(1 for r in records if r['U'] and r['I'] *
                       frac.denominator >= frac.numerator * r['U'])
            summary[name] = 100.0 * hits / n
        return summary

    def _mask(self, sample: dict, key: str, record: dict) -> torch.Tensor:
        """Fetch a (H, W) mask tensor from a data sample dict.

        Args:
            sample (dict): The data sample.
            key (str): ``'pred_sem_seg'`` or ``'gt_sem_seg'``.
            record (dict): The sample's ids, for error messages.

        Returns:
            torch.Tensor: The mask, on the sample's device.
        """
        field = sample.get(key)
        data = field.get('data') if isinstance(field, dict) else None
        if data is None:
            raise KeyError(f'RISMetric: {self._describe(record)} has no '
                           f"{key}['data']")
        if not isinstance(data, torch.Tensor):
            data = torch.as_tensor(data)
        if data.ndim == 3 and data.shape[0] == 1:
            data = data[0]
        if data.ndim != 2:
            raise ValueError(
                f'RISMetric: {self._describe(record)}: {key} must have shape '
                f'(1, H, W), got {tuple(data.shape)}')
        return data

    def _check_shapes(self, pred_hw: tuple, gt_hw: tuple, sample: dict,
                      record: dict) -> None:
        """Check that prediction and ground truth have the agreed size.

        Args:
            pred_hw (tuple): Prediction (H, W).
            gt_hw (tuple): Ground-truth (H, W).
            sample (dict): The data sample (for ``img_shape``/``ori_shape``).
            record (dict): The sample's ids, for error messages.
        """
        where = f'RISMetric(eval_resolution={self.eval_resolution!r}): ' + \
            self._describe(record)
        if self.eval_resolution is None:
            if pred_hw != gt_hw:
                raise ValueError(
                    f'{where}: prediction {pred_hw} and ground truth {gt_hw} '
                    'differ in size. To score at the resized input size put '
                    'LoadRefMask before Resize in the test pipeline and set '
                    "the segmentor's test_cfg.output_size='input'; to score "
                    'at the original size put LoadRefMask after Resize and '
                    "set test_cfg.output_size='original'")
            return
        key = _RESOLUTION_KEYS[self.eval_resolution]
        if sample.get(key) is None:
            raise KeyError(f'{where}: the data sample has no metainfo {key!r}'
                           ' (PackRISInputs meta_keys)')
        expected = tuple(int(x) for x in tuple(sample[key])[:2])
        problems = []
        if gt_hw != expected:
            order = 'before' if self.eval_resolution == 'input' else 'after'
            problems.append(
                f'ground truth {gt_hw} is not at {key} {expected}: put '
                f'LoadRefMask {order} Resize in the test pipeline')
        if pred_hw != expected:
            problems.append(
                f'prediction {pred_hw} is not at {key} {expected}: set the '
                'segmentor\'s test_cfg.output_size='
                f'{self.eval_resolution!r}')
        if problems:
            raise ValueError(f'{where}: ' + '; '.join(problems) +
                             ' (or change RISMetric eval_resolution)')

    def _write_mask(self, pred: torch.Tensor, sample: dict,
                    record: dict) -> str:
        """Write a prediction as a 0/255 PNG into ``output_dir``.

        Args:
            pred (torch.Tensor): The (H, W) 0/1 prediction.
            sample (dict): The data sample (for ``sample_idx``).
            record (dict): The sample's ids.

        Returns:
            str: The file name, relative to ``output_dir``.
        """
        if record['ref_id'] is not None and record['sent_id'] is not None:
            name = f"{record['ref_id']}_{record['sent_id']}.png"
        elif sample.get('sample_idx') is not None:
            name = f"{_builtin(sample['sample_idx'])}.png"
        else:
            # Rank in the name: ranks count independently.
            name = f'rank{get_rank()}_{self._num_unnamed:06d}.png'
            self._num_unnamed += 1
        mask = (pred.to(torch.uint8) * 255).cpu().numpy()
        Image.fromarray(mask).save(osp.join(self.output_dir, name))
        return name

    def _log_table(self, overall: dict, per_group: Dict[str, dict]) -> None:
        """Print the figures of all sentences and of every group.

        Args:
            overall (dict): Figures of all sentences.
            per_group (dict[str, dict]): Figures of every group.
        """
        names = [name for name, _ in self.thresholds]
        table = PrettyTable()
        table.field_names = [
            self.group_by or 'group', 'sentences', 'oIoU', 'mIoU'
        ] + names
        for label, s in [('all', overall)] + list(per_group.items()):
            table.add_row([label, s['num_sentences']] +
                          [f'{s[k]:.2f}' for k in ['oIoU', 'mIoU'] + names])
        print_log('RIS results:\n' + table.get_string(), logger='current')

    def _dump(self, results: List[dict], overall: dict,
              per_group: Dict[str, dict], num_skipped: int) -> None:
        """Write ``results.json`` and ``per_sentence.jsonl``.

        Args:
            results (list[dict]): All per-sentence records.
            overall (dict): Figures of all sentences.
            per_group (dict[str, dict]): Figures of every group.
            num_skipped (int): Number of ``exist=False`` sentences.
        """
        summary = dict(
            overall=overall,
            groups=per_group,
            num_skipped_negatives=num_skipped,
            settings=dict(
                thresholds=[float(f) for _, f in self.thresholds],
                ignore_index=self.ignore_index,
                eval_resolution=self.eval_resolution,
                group_by=self.group_by))
        with open(osp.join(self.output_dir, 'results.json'), 'w') as f:
            # NaN (empty sets) is written as null to keep the file strict.
            json.dump(_nan_to_none(summary), f, indent=2)
        with open(osp.join(self.output_dir, 'per_sentence.jsonl'), 'w') as f:
            for r in results:
                iou = None
                if r['exist']:
                    iou = r['I'] / r['U'] if r['U'] else 0.0
                line = dict(
                    ref_id=r['ref_id'],
                    sent_id=r['sent_id'],
                    img_path=r['img_path'],
                    exist=r['exist'],
                    group=r['group'],
                    I=r['I'],
                    U=r['U'],
                    IoU=iou,
                    mask=r['mask'])
                f.write(json.dumps(line) + '\n')
        print_log(
            f'RISMetric: wrote results.json and per_sentence.jsonl to '
            f'{self.output_dir}',
            logger='current')

    @staticmethod
    def _describe(record: dict) -> str:
        """Name a sample by its image and ids for error messages."""
        return (f"sample img_path={record['img_path']!r}, "
                f"ref_id={record['ref_id']!r}, sent_id={record['sent_id']!r}")


def _nan_to_none(obj: Any) -> Any:
    """Replace NaN floats in nested dicts by None (strict JSON).

    Args:
        obj (Any): A nested structure of dicts, lists and scalars.

    Returns:
        Any: The same structure without NaN.
    """
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_nan_to_none(v) for v in obj]
    if isinstance(obj, float) and math.isnan(obj):
        return None
    return obj
