"""The worst-predicted sentences of a test run, ranked and rendered (``render_worst.py``).

``tools/test.py CONFIG CKPT --out DIR`` leaves in ``DIR`` what :class:`~mmseg_ris.evaluation.RISMetric`
writes: ``results.json``, ``per_sentence.jsonl`` (one line per sentence: ``ref_id``, ``sent_id``,
``img_path``, ``exist``, ``group``, ``I``, ``U``, ``IoU``, ``mask``) and, because ``--out`` sets
``keep_results=True``, one prediction PNG per sentence (0/255, ``{ref_id}_{sent_id}.png``, named in the
line's ``mask`` field).

Ordering (:func:`rank_worst`): the sentences are sorted by IoU = I / U, lowest first, compared exactly as
fractions; ties go to the sentence with more wrong pixels (U - I) first, then by ``ref_id`` and
``sent_id`` so the order is reproducible. Two kinds of sentence are not ranked:

* ``U == 0``: empty ground truth and empty prediction. The metric scores them 0 (LAVT's convention for
  mIoU), but the prediction is exactly right, so they are not "bad";
* ``exist == False`` (R-RefCOCO negatives): not part of the oIoU / mIoU protocol and left out by the
  metric (they have IoU null).

Both are counted in the summary.
"""
import copy
import inspect
import json
import os
import os.path as osp
from fractions import Fraction
from typing import Any, Dict, List, Optional, Sequence, Tuple

import mmcv
import numpy as np
from PIL import Image

from .overlay import draw_ris_overlay

__all__ = ['PER_SENTENCE_FILE', 'load_per_sentence', 'rank_worst', 'check_predictions',
           'build_test_dataset', 'index_by_ids', 'render_worst']

PER_SENTENCE_FILE = 'per_sentence.jsonl'
_REQUIRED = ('ref_id', 'sent_id', 'exist', 'I', 'U')
_HOW_TO_GET_MASKS = (
    'prediction PNGs are written by RISMetric(keep_results=True): run '
    '`python tools/test.py CONFIG CHECKPOINT --out DIR` (which sets it), or add '
    '`--cfg-options test_evaluator.output_dir=DIR test_evaluator.keep_results=True`')


def load_per_sentence(result_dir: str) -> List[dict]:
    """Read ``per_sentence.jsonl`` of a test run.

    Args:
        result_dir (str): The ``--out`` folder of ``tools/test.py``.

    Returns:
        list[dict]: One record per sentence, in file order.

    Raises:
        FileNotFoundError: If the file is missing (the message says how to produce it).
        ValueError: If a line is not JSON or lacks a field (file and line named).
    """
    path = osp.join(result_dir, PER_SENTENCE_FILE)
    if not osp.isfile(path):
        raise FileNotFoundError(
            f'{path} not found: per-sentence results are written by '
            '`python tools/test.py CONFIG CHECKPOINT --out DIR` (RISMetric output_dir)')
    records = []
    with open(path) as f:
        for lineno, text in enumerate(f, 1):
            if not text.strip():
                continue
            try:
                rec = json.loads(text)
            except json.JSONDecodeError as e:
                raise ValueError(f'{path}:{lineno}: not a JSON line ({e.msg})') from None
            missing = [k for k in _REQUIRED if not isinstance(rec, dict) or k not in rec]
            if missing:
                raise ValueError(f'{path}:{lineno}: missing field(s) {missing}; expected the '
                                 f'per-sentence records of RISMetric ({", ".join(_REQUIRED)}, ...)')
            records.append(rec)
    if not records:
        raise ValueError(f'{path} holds no sentence')
    return records


def _id_key(value: Any) -> Tuple[int, int, str]:
    """Sort integer ids numerically and anything else (None, strings) after them as text."""
    if isinstance(value, int) and not isinstance(value, bool):
        return 0, value, ''
    return 1, 0, str(value)


def _order_key(rec: dict) -> tuple:
    i, u = int(rec['I']), int(rec['U'])
    return Fraction(i, u), -(u - i), _id_key(rec['ref_id']), _id_key(rec['sent_id'])


def rank_worst(records: Sequence[dict],
               num: Optional[int] = None,
               group: Optional[str] = None) -> Tuple[List[dict], Dict[str, Any]]:
    """The ``num`` lowest-IoU sentences (see the module docstring for the order).

    Args:
        records (Sequence[dict]): From :func:`load_per_sentence`.
        num (int, optional): How many to return; None returns all ranked sentences.
        group (str, optional): Only sentences of this group (the metric's ``group_by`` value, e.g. the
            expression type ``'relational'``).

    Returns:
        tuple[list[dict], dict]: The ranked records (copies with ``rank`` from 0 and ``IoU``) and a
        summary: ``sentences``, ``negatives`` (exist=False, skipped), ``empty_union`` (U=0, skipped),
        ``not_in_group``, ``ranked`` (candidates) and ``selected``.

    Raises:
        ValueError: If ``num`` < 1, or no positive sentence has ``group`` (the groups present are
            listed).
    """
    if num is not None and num < 1:
        raise ValueError(f'num must be >= 1, got {num}')
    positives = [r for r in records if r['exist']]
    if group is not None:
        groups = sorted({str(r.get('group')) for r in positives if r.get('group') is not None})
        if group not in groups:
            raise ValueError(f'no sentence of group {group!r}; groups in the results: '
                             f'{groups or "none (the metric ran with group_by=None)"}')
    in_group = [r for r in positives if group is None or str(r.get('group')) == group]
    candidates = [r for r in in_group if int(r['U']) > 0]
    candidates.sort(key=_order_key)
    selected = candidates if num is None else candidates[:num]
    ranked = []
    for rank, r in enumerate(selected):
        rec = dict(r)
        rec.update(rank=rank, IoU=int(r['I']) / int(r['U']))
        ranked.append(rec)
    summary = dict(sentences=len(records), negatives=len(records) - len(positives),
                   not_in_group=len(positives) - len(in_group),
                   empty_union=len(in_group) - len(candidates), ranked=len(candidates),
                   selected=len(ranked), group=group)
    return ranked, summary


def check_predictions(result_dir: str, records: Sequence[dict]) -> List[str]:
    """Paths of the prediction PNGs of ``records``; an error says which option writes them.

    Args:
        result_dir (str): The ``--out`` folder.
        records (Sequence[dict]): Records with the ``mask`` field.

    Returns:
        list[str]: One path per record.

    Raises:
        FileNotFoundError: If a record has no ``mask`` or its file is missing.
    """
    no_mask = [r for r in records if not r.get('mask')]
    if no_mask:
        r = no_mask[0]
        raise FileNotFoundError(
            f'{osp.join(result_dir, PER_SENTENCE_FILE)} names no prediction mask for '
            f'{len(no_mask)} of the {len(records)} selected sentences (e.g. ref_id={r["ref_id"]}, '
            f'sent_id={r["sent_id"]}): the test run did not keep its predictions. ' + _HOW_TO_GET_MASKS)
    paths = [osp.join(result_dir, r['mask']) for r in records]
    missing = [p for p in paths if not osp.isfile(p)]
    if missing:
        raise FileNotFoundError(f'{len(missing)} prediction PNG(s) missing, e.g. {missing[0]}; '
                                + _HOW_TO_GET_MASKS)
    return paths


def build_test_dataset(cfg) -> Any:
    """Build ``cfg.test_dataloader.dataset`` with every sentence as its own record.

    ``sentence_mode='all'`` is forced where the dataset class takes it, so that every
    ``(ref_id, sent_id)`` of the results can be looked up even when the split defaults to one random
    sentence per referent.

    Args:
        cfg (Config): A full config with ``test_dataloader``.

    Returns:
        BaseDataset: The dataset with the config's test pipeline.

    Raises:
        KeyError: If the config has no ``test_dataloader.dataset``.
    """
    from mmengine.registry import init_default_scope
    from mmseg.registry import DATASETS

    loader = cfg.get('test_dataloader') or {}
    if not loader.get('dataset'):
        raise KeyError(f'config {cfg.filename!r} has no test_dataloader.dataset')
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    ds_cfg = copy.deepcopy(loader['dataset'])
    ds_type = ds_cfg.get('type')
    cls = DATASETS.get(ds_type) if isinstance(ds_type, str) else ds_type
    if cls is not None and 'sentence_mode' in inspect.signature(cls.__init__).parameters:
        ds_cfg['sentence_mode'] = 'all'
    return DATASETS.build(ds_cfg)


def index_by_ids(dataset: Any) -> Dict[Tuple[Any, Any], int]:
    """``{(ref_id, sent_id): dataset index}`` from the records (no pipeline is run)."""
    index = {}
    for i in range(len(dataset)):
        info = dataset.get_data_info(i)
        index[(info.get('ref_id'), info.get('sent_id'))] = i
    return index


def _read_pred(path: str) -> np.ndarray:
    pred = np.asarray(Image.open(path))
    if pred.ndim == 3:
        pred = pred[..., 0]
    bad = np.setdiff1d(np.unique(pred), [0, 1, 255])
    if bad.size:
        raise ValueError(f'{path}: a prediction PNG holds 0/255 (or 0/1), found values {bad[:5]}')
    return pred > 0


def render_worst(cfg,
                 result_dir: str,
                 out_dir: Optional[str] = None,
                 num: int = 20,
                 group: Optional[str] = None,
                 dataset: Any = None,
                 progress: bool = True) -> Dict[str, Any]:
    """Render the ``num`` worst sentences of a test run: image, ground truth, prediction, text, IoU.

    Each render is :func:`~mmseg_ris.visualization.draw_ris_overlay` of the image (read from the
    record's ``img_path`` and resized to the prediction, as the visualisation hook does), the
    prediction filled in red, the ground truth as a green outline, the expression and a caption with
    the rank, IoU, I / U, the group and the ids. Files are ``{rank:03d}_iou{IoU:.2f}_{ref}_{sent}.png``;
    ``worst.jsonl`` lists them in rank order with the records and expressions.

    Ground truth and expression come from the config's test dataset and pipeline (the evaluation
    resolution is that of the run). Each sentence's I and U are recomputed from the ground truth and
    the prediction PNG and must equal the recorded ones, which catches a config or split that is not
    the one the results came from.

    Args:
        cfg (Config): The config of the test run (``test_dataloader``).
        result_dir (str): The ``--out`` folder of ``tools/test.py``.
        out_dir (str, optional): Output folder; defaults to ``{result_dir}/worst``.
        num (int): How many sentences to render.
        group (str, optional): Only sentences of this group (e.g. ``'relational'``).
        dataset (BaseDataset, optional): The test dataset, if already built.
        progress (bool): Show a progress bar.

    Returns:
        dict: The :func:`rank_worst` summary plus ``out_dir``, ``index`` (path of ``worst.jsonl``) and
        ``rendered`` (the index entries).

    Raises:
        FileNotFoundError: If the results or the prediction PNGs are missing.
        KeyError: If a sentence is not in the config's test dataset.
        ValueError: If the recomputed I / U differ from the recorded ones.
    """
    from ..utils.progress import progress_bar

    records = load_per_sentence(result_dir)
    worst, summary = rank_worst(records, num, group)
    pred_paths = check_predictions(result_dir, worst)
    ignore_index = 255
    results_json = osp.join(result_dir, 'results.json')
    if osp.isfile(results_json):
        with open(results_json) as f:
            ignore_index = json.load(f).get('settings', {}).get('ignore_index', ignore_index)
    out_dir = out_dir or osp.join(result_dir, 'worst')
    os.makedirs(out_dir, exist_ok=True)

    if dataset is None:
        dataset = build_test_dataset(cfg)
    index = index_by_ids(dataset) if worst else {}
    entries = []
    for rec, pred_path in progress_bar(list(zip(worst, pred_paths)), desc='render worst',
                                       enable=progress):
        key = (rec['ref_id'], rec['sent_id'])
        if key not in index:
            raise KeyError(
                f'ref_id={key[0]}, sent_id={key[1]} of {result_dir} is not in the config\'s test '
                f'dataset ({len(dataset)} sentences, split {getattr(dataset, "split", "?")!r}); '
                'render with the config (and --cfg-options, e.g. test_dataloader.dataset.split=...) '
                'of the test run')
        sample = dataset[index[key]]
        ds = sample['data_samples']
        meta = ds.metainfo
        gt = ds.gt_sem_seg.data[0].cpu().numpy()
        pred = _read_pred(pred_path)
        if pred.shape != gt.shape:
            raise ValueError(
                f'{pred_path}: prediction {pred.shape} and the config\'s ground truth {gt.shape} differ '
                'in size: the config\'s test pipeline is not the one of the test run')
        valid = gt != ignore_index
        gt_fg = gt == 1
        inter = int((pred & valid & gt_fg).sum())
        union = int(((pred & valid) | gt_fg).sum())
        if (inter, union) != (int(rec['I']), int(rec['U'])):
            raise ValueError(
                f'ref_id={key[0]}, sent_id={key[1]}: I/U from {pred_path} and the config\'s ground '
                f'truth are {inter}/{union}, the run recorded {rec["I"]}/{rec["U"]}: the config, '
                'split or data are not those of the test run')
        img = mmcv.imread(meta['img_path'])
        if img.shape[:2] != pred.shape:
            img = mmcv.imresize(img, (pred.shape[1], pred.shape[0]))
        text = meta.get('text', '')
        grp = f'  {rec["group"]}' if rec.get('group') is not None else ''
        caption = (f'#{rec["rank"]:03d}  IoU {rec["IoU"]:.2f} (I {inter} / U {union}){grp}  '
                   f'ref {key[0]} sent {key[1]}')
        vis = draw_ris_overlay(img, pred, text, gt_mask=gt_fg, caption=caption)
        name = f'{rec["rank"]:03d}_iou{rec["IoU"]:.2f}_{key[0]}_{key[1]}.png'
        mmcv.imwrite(vis, osp.join(out_dir, name))
        entries.append(dict(rank=rec['rank'], file=name, ref_id=key[0], sent_id=key[1],
                            IoU=rec['IoU'], I=inter, U=union, group=rec.get('group'), text=text,
                            img_path=meta['img_path'], mask=rec['mask']))
    index_path = osp.join(out_dir, 'worst.jsonl')
    with open(index_path, 'w') as f:
        for e in entries:
            f.write(json.dumps(e) + '\n')
    return dict(summary, out_dir=out_dir, index=index_path, rendered=entries)
