"""Swin checkpoints: official names -> mmseg names; a loader that reports.

Official Swin checkpoints (``swin_base_patch4_window12_384_22k.pth``, the one
LAVT and MagNet start from) keep their weights under ``'model'`` with the
names of ``microsoft/Swin-Transformer``
(``layers.0.blocks.0.attn.qkv.weight``).
mmseg's :class:`~mmseg.models.backbones.SwinTransformer` names the same
tensors differently and builds its patch merging with ``nn.Unfold``, whose
channel order differs from the official ``cat([x0, x1, x2, x3])``. mmseg only
ships the conversion as a script (``tools/model_converters/swin2mmseg.py``,
not importable), so it is re-implemented here where the backbone's
``init_weights`` and ``tools/model_converters/swin2mmseg_ris.py`` share it.
"""
import logging
import math
import os.path as osp
import pickle
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import List, Mapping, Optional, Sequence

import torch
import torch.nn.functional as F
from mmengine.logging import print_log
from torch import Tensor, nn

from mmseg_ris.utils import resolve_path

# Official patch merging concatenates the 2x2 neighbours as (row, col) =
# (0,0), (1,0), (0,1), (1,1); nn.Unfold enumerates them as (0,0), (0,1),
# (1,0), (1,1) and interleaves them channel-major. The permutation is its own
# inverse, so the same index list serves both directions.
MERGE_ORDER = (0, 2, 1, 3)

# Keys of the ImageNet classifier that have no counterpart in a dense backbone:
# the classification head and the final LayerNorm in front of it (mmseg and
# LAVT both leave ``norm3`` freshly initialised rather than reuse it).
CLASSIFIER_PREFIXES = ('head.', )
CLASSIFIER_NORM_KEYS = ('norm.weight', 'norm.bias')
# Buffers computed from the window size at construction; a checkpoint's copy
# is redundant and has the wrong shape when the window differs.
DERIVED_BUFFER_SUFFIXES = ('relative_position_index', 'attn_mask')
# mmseg Swin keys an official checkpoint cannot provide: the per-output
# LayerNorms ``norm{i}`` (the official model has a single final ``norm``).
EXPECTED_MISSING_PATTERN = re.compile(r'^norm\d+\.(weight|bias)$')

_WRAPPER_KEYS = ('state_dict', 'model')
_STRIP_PREFIXES = ('module.', 'backbone.')
_MAX_LISTED = 30


@dataclass
class SwinLoadReport:
    """What :func:`load_swin_state_dict` did with a checkpoint.

    Args:
        filename (str): The checkpoint file.
        converted (bool): Whether official Microsoft names were converted.
        loaded (list[str]): Model keys filled from the checkpoint.
        missing (list[str]): Model keys the checkpoint lacks that it should
            have provided (left at their initial values).
        expected_missing (list[str]): Model keys no Swin classification
            checkpoint carries (``norm{i}``, derived buffers).
        unexpected (list[str]): Checkpoint keys the model has no use for.
        ignored (list[str]): Checkpoint keys dropped on purpose (classifier
            head and final norm, derived buffers).
        resized (list[str]): Relative position bias tables that were
            resized to the model's window.
    """
    filename: str
    converted: bool = False
    loaded: List[str] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)
    expected_missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)
    ignored: List[str] = field(default_factory=list)
    resized: List[str] = field(default_factory=list)


def _abbreviate(keys: Sequence[str], limit: int = _MAX_LISTED) -> str:
    """Join keys for a log line, cutting long lists.

    Args:
        keys (Sequence[str]): Keys to show.
        limit (int): How many to name before summarising the rest.

    Returns:
        str: Comma separated keys, with ``... (N more)`` if cut.
    """
    shown = ', '.join(keys[:limit])
    if len(keys) > limit:
        shown += f', ... ({len(keys) - limit} more)'
    return shown


def load_checkpoint_file(filename: str) -> dict:
    """Read a checkpoint with ``torch.load(weights_only=True)``.

    Args:
        filename (str): Local path, ``pkg://PACKAGE/sub/path`` or an
            ``http(s)://`` URL (downloaded to torch hub's cache).

    Returns:
        dict: The unpickled checkpoint.

    Raises:
        FileNotFoundError: If a local file does not exist.
        RuntimeError: If the file holds objects other than tensors and
            containers (``weights_only`` refuses to unpickle them).
    """
    if not isinstance(filename, str):
        raise TypeError(f'checkpoint must be a path string, got '
                        f'{type(filename).__name__}')
    try:
        if filename.startswith(('http://', 'https://')):
            return torch.hub.load_state_dict_from_url(
                filename, map_location='cpu', weights_only=True)
        path = resolve_path(filename)
        if not osp.isfile(path):
            raise FileNotFoundError(
                f'Swin checkpoint {filename!r} does not exist')
        return torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as err:
        raise RuntimeError(
            f'{filename!r} cannot be read with torch.load(weights_only=True)'
            f' (it pickles more than tensors); re-save its state dict with '
            f'tools/model_converters/swin2mmseg_ris.py from a trusted '
            f'copy: {err}') from err


def extract_state_dict(
        checkpoint: Mapping,
        filename: str = '<checkpoint>',
        prefix: Optional[str] = None) -> 'OrderedDict[str, Tensor]':
    """Unwrap a checkpoint into a flat state dict of backbone tensors.

    Takes ``checkpoint['state_dict']`` or ``checkpoint['model']`` when
    present (mmengine and the official release respectively), strips the
    ``module.`` (DDP) and ``backbone.`` (segmentor) prefixes and keeps only
    tensors.

    Args:
        checkpoint (Mapping): What :func:`load_checkpoint_file` returned.
        filename (str): Name used in error messages.
        prefix (str, optional): If given, keep only keys starting with it
            and remove it (mmengine's ``Pretrained(prefix=...)`` habit),
            before the automatic prefix stripping.

    Returns:
        OrderedDict[str, Tensor]: Renamed tensors.

    Raises:
        TypeError: If the checkpoint is not a mapping.
        RuntimeError: If ``prefix`` matches no key.
    """
    if not isinstance(checkpoint, Mapping):
        raise TypeError(f'{filename}: expected a dict checkpoint, got '
                        f'{type(checkpoint).__name__}')
    state = checkpoint
    for wrapper in _WRAPPER_KEYS:
        if isinstance(checkpoint.get(wrapper), Mapping):
            state = checkpoint[wrapper]
            break
    if prefix:
        keys = [k for k in state if k.startswith(prefix)]
        if not keys:
            raise RuntimeError(
                f'{filename}: no key starts with prefix {prefix!r} '
                f'(first keys: {_abbreviate(list(state)[:5])})')
        state = {k[len(prefix):]: state[k] for k in keys}
    result = OrderedDict()
    for key, value in state.items():
        if not isinstance(value, Tensor):
            continue
        changed = True
        while changed:
            changed = False
            for strip in _STRIP_PREFIXES:
                if key.startswith(strip):
                    key = key[len(strip):]
                    changed = True
        result[key] = value
    return result


def is_official_swin(state_dict: Mapping[str, Tensor]) -> bool:
    """Whether a state dict uses the official Microsoft Swin names.

    Args:
        state_dict (Mapping[str, Tensor]): Flat state dict.

    Returns:
        bool: True for ``layers.*`` / ``patch_embed.proj.*`` names.
    """
    return any(
        k.startswith(('layers.', 'patch_embed.proj.')) for k in state_dict)


def _merge_official_to_unfold(tensor: Tensor, key: str) -> Tensor:
    """Re-order the last (4*C) dim of a patch-merging weight for nn.Unfold.

    Args:
        tensor (Tensor): Official ``reduction.weight`` (C_out, 4C) or
            ``norm.weight/bias`` (4C,): index ``j * C + c`` for neighbour j
            in official order.
        key (str): Key name for error messages.

    Returns:
        Tensor: The same values at index ``c * 4 + k`` (unfold order).
    """
    *lead, last = tensor.shape
    if last % 4:
        raise ValueError(f'{key}: last dim {last} of a patch-merging tensor '
                         f'must be a multiple of 4')
    grouped = tensor.reshape(*lead, 4, last // 4)[..., list(MERGE_ORDER), :]
    return grouped.transpose(-1, -2).reshape(tensor.shape).contiguous()


def convert_official_swin(
        state_dict: Mapping[str, Tensor]) -> 'OrderedDict[str, Tensor]':
    """Rename an official Microsoft Swin state dict to mmseg's names.

    ``layers -> stages``, ``attn. -> attn.w_msa.``, ``mlp.fc1 ->
    ffn.layers.0.0``, ``mlp.fc2 -> ffn.layers.1``, ``patch_embed.proj ->
    patch_embed.projection``; patch-merging ``reduction``/``norm`` channels
    are re-ordered for ``nn.Unfold``. The classification head (``head.*``)
    and the shifted-window ``attn_mask`` buffers (no mmseg counterpart) are
    dropped; every other key (e.g. the final ``norm.*``) passes unchanged,
    as in mmseg's ``swin2mmseg.py``.

    Args:
        state_dict (Mapping[str, Tensor]): Official names.

    Returns:
        OrderedDict[str, Tensor]: mmseg names.
    """
    converted = OrderedDict()
    for key, value in state_dict.items():
        if key.startswith(CLASSIFIER_PREFIXES) or key.endswith('attn_mask'):
            continue
        new_key = key
        if key.startswith('layers.'):
            new_key = 'stages.' + key[len('layers.'):]
            new_key = new_key.replace('.attn.', '.attn.w_msa.', 1)
            new_key = new_key.replace('.mlp.fc1.', '.ffn.layers.0.0.')
            new_key = new_key.replace('.mlp.fc2.', '.ffn.layers.1.')
            if ('.downsample.reduction.' in key
                    or '.downsample.norm.' in key):
                value = _merge_official_to_unfold(value, key)
        elif key.startswith('patch_embed.proj.'):
            new_key = key.replace('patch_embed.proj.',
                                  'patch_embed.projection.', 1)
        converted[new_key] = value
    return converted


def resize_relative_position_table(table: Tensor, num_entries: int,
                                   key: str) -> Tensor:
    """Bicubically resize a relative position bias table to another window.

    Args:
        table (Tensor): ((2w-1)^2, heads) table of the checkpoint.
        num_entries (int): (2w'-1)^2 of the model.
        key (str): Key name for error messages.

    Returns:
        Tensor: (num_entries, heads) table, in the input's dtype.
    """
    src_len, heads = table.shape
    src_side, dst_side = math.isqrt(src_len), math.isqrt(num_entries)
    if src_side**2 != src_len or dst_side**2 != num_entries:
        raise ValueError(f'{key}: relative position tables must have a '
                         f'square number of rows, got {src_len} -> '
                         f'{num_entries}')
    # (rows = dy, cols = dx) grid per head, as the table is indexed.
    grid = table.float().t().reshape(1, heads, src_side, src_side)
    resized = F.interpolate(
        grid, size=(dst_side, dst_side), mode='bicubic', align_corners=False)
    return resized.reshape(heads, num_entries).t().contiguous().to(
        table.dtype)


def load_swin_state_dict(model: nn.Module,
                         state_dict: Mapping[str, Tensor],
                         filename: str,
                         exclude_prefixes: Sequence[str] = (),
                         logger: str = 'current') -> SwinLoadReport:
    """Load (possibly official) Swin weights into ``model`` and log a report.

    Only the keys of ``model`` outside ``exclude_prefixes`` form the Swin
    part; it is loaded with ``strict=False`` after:

    * converting official Microsoft names (:func:`convert_official_swin`);
    * dropping the classifier (``head.*``, final ``norm.*``) and derived
      buffers (``relative_position_index``, ``attn_mask``);
    * bicubically resizing relative position bias tables whose window
      differs from the model's.

    Args:
        model (nn.Module): An mmseg ``SwinTransformer`` (or subclass).
        state_dict (Mapping[str, Tensor]): Flat state dict (see
            :func:`extract_state_dict`).
        filename (str): Checkpoint name for messages.
        exclude_prefixes (Sequence[str]): Model key prefixes that are not
            part of Swin (e.g. ``('text_encoder.', 'fusions.')``).
        logger (str): mmengine logger name for ``print_log``.

    Returns:
        SwinLoadReport: What was loaded, missing, unexpected, ignored.

    Raises:
        RuntimeError: If no Swin weight is found in the checkpoint, or a
            tensor's shape differs from the model's.
    """
    report = SwinLoadReport(filename=filename)
    if is_official_swin(state_dict):
        # The conversion drops these; record them for the report.
        report.ignored.extend(
            k for k in state_dict
            if k.startswith(CLASSIFIER_PREFIXES) or k.endswith('attn_mask'))
        state_dict = convert_official_swin(state_dict)
        report.converted = True
    exclude = tuple(exclude_prefixes)
    targets = OrderedDict((k, v) for k, v in model.state_dict().items()
                          if not k.startswith(exclude))

    candidates = OrderedDict()
    for key, value in state_dict.items():
        if (key.startswith(CLASSIFIER_PREFIXES) or key in CLASSIFIER_NORM_KEYS
                or key.endswith(DERIVED_BUFFER_SUFFIXES)):
            report.ignored.append(key)
        elif key in targets:
            candidates[key] = value
        else:
            report.unexpected.append(key)

    if not candidates:
        examples = (f', e.g. {_abbreviate(list(state_dict)[:5])}'
                    if state_dict else '')
        raise RuntimeError(
            f'{filename} holds no weight of the Swin backbone '
            f'{type(model).__name__} ({len(state_dict)} tensors{examples}); '
            f'is it a checkpoint of another model?')

    for key, value in candidates.items():
        target = targets[key]
        if ('relative_position_bias_table' in key and value.dim() == 2
                and target.dim() == 2 and value.shape[1] == target.shape[1]
                and value.shape[0] != target.shape[0]):
            candidates[key] = resize_relative_position_table(
                value, target.shape[0], key)
            report.resized.append(key)
    mismatched = [(k, tuple(v.shape), tuple(targets[k].shape))
                  for k, v in candidates.items()
                  if v.shape != targets[k].shape]
    if mismatched:
        details = '; '.join(f'{k}: checkpoint {c} vs model {m}'
                            for k, c, m in mismatched[:10])
        more = (f' (and {len(mismatched) - 10} more)'
                if len(mismatched) > 10 else '')
        raise RuntimeError(f'{filename}: shape mismatch between checkpoint '
                           f'and {type(model).__name__}: {details}{more}')

    # Every key offered is a model key, so strict=False only skips the keys
    # the checkpoint lacks; those are classified below.
    model.load_state_dict(candidates, strict=False)
    report.loaded = list(candidates)
    for key in targets:
        if key in candidates:
            continue
        if (EXPECTED_MISSING_PATTERN.match(key)
                or key.endswith(DERIVED_BUFFER_SUFFIXES)):
            report.expected_missing.append(key)
        else:
            report.missing.append(key)
    log_swin_load_report(report, len(targets), type(model).__name__, logger)
    return report


def log_swin_load_report(report: SwinLoadReport, num_targets: int,
                         owner: str, logger: str = 'current') -> None:
    """Write a :class:`SwinLoadReport` to the mmengine log.

    Loaded/ignored/expected-missing lines are INFO; missing and unexpected
    keys are WARNING because they usually mean a wrong checkpoint.

    Args:
        report (SwinLoadReport): The report.
        num_targets (int): Number of Swin keys in the model.
        owner (str): Model class name for the messages.
        logger (str): mmengine logger name.
    """
    naming = (' (official Microsoft names converted to mmseg names)'
              if report.converted else '')
    print_log(f'{owner}: loaded {len(report.loaded)}/{num_targets} Swin '
              f'tensors from {report.filename}{naming}', logger=logger)
    if report.resized:
        print_log(f'{owner}: resized relative position bias tables to the '
                  f'model window (bicubic): {_abbreviate(report.resized)}',
                  logger=logger)
    derived = [k for k in report.ignored
               if k.endswith(DERIVED_BUFFER_SUFFIXES)]
    classifier = [
        k for k in report.ignored if not k.endswith(DERIVED_BUFFER_SUFFIXES)
    ]
    if classifier:
        print_log(f'{owner}: ignored classifier keys of {report.filename}: '
                  f'{_abbreviate(classifier)}', logger=logger)
    if derived:
        print_log(f'{owner}: ignored {len(derived)} derived buffers of '
                  f'{report.filename} (relative_position_index / attn_mask '
                  f'are computed from the window size)', logger=logger)
    norms = [k for k in report.expected_missing
             if not k.endswith(DERIVED_BUFFER_SUFFIXES)]
    if norms:
        print_log(f'{owner}: not in {report.filename}, as expected for a '
                  f'Swin classification checkpoint (initialised fresh): '
                  f'{_abbreviate(norms)}', logger=logger)
    if report.missing:
        print_log(f'{owner}: missing keys in {report.filename} (left at '
                  f'their initial values): {_abbreviate(report.missing)}',
                  logger=logger, level=logging.WARNING)
    if report.unexpected:
        print_log(f'{owner}: unexpected keys in {report.filename} (not '
                  f'used): {_abbreviate(report.unexpected)}',
                  logger=logger, level=logging.WARNING)


def load_pretrained_swin(model: nn.Module,
                         checkpoint: str,
                         exclude_prefixes: Sequence[str] = (),
                         prefix: Optional[str] = None,
                         logger: str = 'current') -> SwinLoadReport:
    """Read a Swin checkpoint file and load it into ``model`` with a report.

    Args:
        model (nn.Module): An mmseg ``SwinTransformer`` (or subclass).
        checkpoint (str): Checkpoint path / ``pkg://`` / URL.
        exclude_prefixes (Sequence[str]): Model key prefixes outside Swin.
        prefix (str, optional): Keep only checkpoint keys with this prefix.
        logger (str): mmengine logger name.

    Returns:
        SwinLoadReport: See :func:`load_swin_state_dict`.
    """
    state_dict = extract_state_dict(
        load_checkpoint_file(checkpoint), checkpoint, prefix=prefix)
    return load_swin_state_dict(model, state_dict, checkpoint,
                                exclude_prefixes, logger)


__all__ = [
    'MERGE_ORDER',
    'SwinLoadReport',
    'convert_official_swin',
    'extract_state_dict',
    'is_official_swin',
    'load_checkpoint_file',
    'load_pretrained_swin',
    'load_swin_state_dict',
    'log_swin_load_report',
    'resize_relative_position_table'
]
