"""Parameter and FLOP counts of a referring segmentor (``tools/analysis_tools/get_flops.py``).

FLOPs come from :class:`mmengine.analysis.FlopAnalyzer` (fvcore's counter): the model is traced with
``torch.jit`` on one sample (image + token ids) and every traced operator that has a *handle* is counted.
What that means for the figures:

* One fused multiply-add counts as one FLOP (so the figures are MACs; papers that count multiplications
  and additions separately report twice as much). Bias additions are not counted.
* Only operators with a handle are counted: ``linear``, ``matmul``/``mm``/``bmm``/``addmm``/``einsum``,
  convolutions, batch/group/layer/instance norms, bilinear/nearest upsampling, adaptive average pooling
  and ``grid_sampler``. mmseg_ris adds ``scaled_dot_product_attention`` (what Hugging Face BERT runs:
  ``QK^T`` and ``attn @ V``, counted like the two matmuls they replace) and ``baddbmm`` (the masked
  ``QK^T`` of ``nn.MultiheadAttention``), and declares pure data movement, fills, look-ups and
  comparisons (``im2col`` of Swin's patch merging, ``pad``, ``fill_``, ``embedding``, ``ne``/``lt``/``le``)
  zero-FLOP.
* Every other operator is skipped (counted as zero) and listed in ``unsupported_ops``: element-wise
  arithmetic and activations (``add``, ``mul``, ``gelu``, ``softmax``, ``sigmoid`` ...) and custom
  autograd functions (``prim::PythonOp.*``, e.g. mmcv's CUDA multi-scale deformable attention; on the CPU
  mmcv runs its pure-PyTorch version, which is counted through ``grid_sampler``).
* Operators run inside a module's ``__call__`` count for that module and its parents by name, so a part
  driven method by method (the text encoder run stage by stage by the backbone) is still attributed to it.
* The trace keeps only what the output depends on: a computation whose result is discarded (LAVT's
  language gate after the last stage) runs in eager mode but is not counted.
* Control flow is frozen at the traced shapes; the figures hold for the given input size and token count.
  The trace uses ``torch.jit``, which torch 2.13 deprecates.

The forward measured is the segmentor's tensor mode (``extract_feat`` + decode head, raw logits; see
:class:`RISTensorForward`). The data preprocessor, the final resize of the
logits to the input size and the thresholding are not included; auxiliary heads (e.g. Mask Grounding)
only run in training, so they have parameters but no inference FLOPs.
"""
import copy
from collections import Counter
from math import prod
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

import torch
from mmengine.analysis import FlopAnalyzer
from mmengine.analysis.jit_handles import get_shape
from mmengine.config import Config
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from .benchmark import (_vocab_size, build_benchmark_model, count_parameters, input_size_of,
                        make_synthetic_batch, prepare_benchmark_config, set_input_size)

__all__ = [
    'NESTED_PARTS', 'ZERO_FLOP_OPS', 'RISTensorForward', 'sdpa_flop_jit', 'baddbmm_flop_jit',
    'ris_flop_analyzer',
    'unused_parameters',
    'make_flop_inputs', 'model_parts', 'analyze_complexity', 'complexity_of_config',
    'format_complexity', 'format_count'
]

# Sub-modules of a top-level part that get their own row (the rest of the parent is its own row).
NESTED_PARTS: Dict[str, Tuple[str, ...]] = {'backbone': ('text_encoder', 'fusions')}
# Operators that move, fill, look up or compare data and do no arithmetic (mmengine already ignores
# eq/ge/gt, copies and reshapes).
ZERO_FLOP_OPS: Tuple[str, ...] = ('aten::im2col', 'aten::col2im', 'aten::pad', 'aten::embedding',
                                  'aten::fill_', 'aten::ne', 'aten::lt', 'aten::le')
# Name of the wrapped segmentor inside RISTensorForward (stripped from every reported module name).
_PREFIX = 'segmentor'


def sdpa_flop_jit(inputs: List[Any], outputs: List[Any]) -> int:
    """FLOPs of ``aten::scaled_dot_product_attention`` as the two matmuls it fuses.

    ``q`` (..., Lq, E), ``k`` (..., Lk, E), ``v`` (..., Lk, Ev): ``QK^T`` costs ``Lq * Lk * E`` and
    ``attn @ V`` ``Lq * Lk * Ev`` multiply-adds per batch element (scaling, masking and softmax are
    element-wise and not counted, as for an explicit attention).

    Args:
        inputs (list[torch._C.Value]): The traced operator's inputs (query, key, value, ...).
        outputs (list[torch._C.Value]): Its outputs (unused).

    Returns:
        int: Multiply-adds.
    """
    q, k, v = (get_shape(x) for x in inputs[:3])
    if q is None or k is None or v is None:
        raise ValueError('scaled_dot_product_attention: the trace has no complete tensor shapes')
    batch = prod(q[:-2])
    lq, e = q[-2], q[-1]
    lk, ev = k[-2], v[-1]
    return batch * lq * lk * (e + ev)


def baddbmm_flop_jit(inputs: List[Any], outputs: List[Any]) -> int:
    """FLOPs of ``aten::baddbmm(input, batch1, batch2)``: the batched matmul ``batch1 @ batch2``.

    ``nn.MultiheadAttention`` computes ``QK^T`` with it when given a mask. ``(b, n, m) @ (b, m, p)``
    costs ``b * n * m * p`` multiply-adds; adding ``input`` is element-wise and not counted.

    Args:
        inputs (list[torch._C.Value]): The traced operator's inputs.
        outputs (list[torch._C.Value]): Its outputs (unused).

    Returns:
        int: Multiply-adds.
    """
    a, b = get_shape(inputs[1]), get_shape(inputs[2])
    if a is None or b is None:
        raise ValueError('baddbmm: the trace has no complete tensor shapes')
    return a[0] * a[1] * a[2] * b[2]


class RISTensorForward(nn.Module):
    """Trace target: a segmentor's tensor-mode forward with plain tensor inputs.

    ``torch.jit`` traces tensors only, while a referring segmentor reads the expression from its data
    samples; this wrapper rebuilds the samples from ``input_ids`` / ``attention_mask`` inside the traced
    call and runs what the tensor mode runs, ``decode_head(extract_feat(inputs, samples))``. The head is
    called through ``__call__`` (the tensor mode calls ``decode_head.forward``), so the operators of its
    own ``forward`` body, e.g. resizes, are attributed to it and not to the segmentor.

    Args:
        segmentor (nn.Module): A segmentor with ``extract_feat(inputs, data_samples)`` reading
            ``input_ids`` and ``attention_mask`` from the data samples, and a ``decode_head``
            (``RISEncoderDecoder``).
    """

    def __init__(self, segmentor: nn.Module) -> None:
        super().__init__()
        self.segmentor = segmentor

    def forward(self, inputs: Tensor, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        from mmseg.structures import SegDataSample
        h, w = int(inputs.shape[-2]), int(inputs.shape[-1])
        samples = []
        for i in range(inputs.shape[0]):
            ds = SegDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w)))
            ds.set_data(dict(input_ids=input_ids[i], attention_mask=attention_mask[i]))
            samples.append(ds)
        feats = self.segmentor.extract_feat(inputs, samples)
        return self.segmentor.decode_head(feats)


class _ParameterUse(TorchFunctionMode):
    """Records every parameter passed to a torch function (``F.linear(x, w)``, ``w * x``, ...)."""

    def __init__(self, params: Dict[int, str]) -> None:
        super().__init__()
        self.params = params
        self.used: Set[str] = set()

    def _visit(self, obj: Any) -> None:
        if isinstance(obj, nn.Parameter):
            name = self.params.get(id(obj))
            if name is not None:
                self.used.add(name)
        elif isinstance(obj, (list, tuple)):
            for o in obj:
                self._visit(o)
        elif isinstance(obj, dict):
            for o in obj.values():
                self._visit(o)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        self._visit(args)
        self._visit(kwargs)
        return func(*args, **kwargs)


def unused_parameters(model: nn.Module, forward: nn.Module, inputs: Tuple[Tensor, ...]) -> List[str]:
    """The parts of ``model`` whose parameters the forward never reads.

    Runs ``forward(*inputs)`` once under a torch-function mode that records the parameters handed to any
    torch operation. Unlike the trace's "uncalled modules", this sees parameters used without calling
    their module (``nn.MultiheadAttention``'s ``out_proj``, embedding tables read as ``.weight``).

    Args:
        model (nn.Module): The module whose parameters are checked (names are relative to it).
        forward (nn.Module): What to run (``model`` itself or a wrapper around it).
        inputs (tuple[Tensor, ...]): Positional inputs of ``forward``.

    Returns:
        list[str]: Names of the outermost modules (or single parameters) none of whose parameters is
        used, sorted.
    """
    names = {id(p): n for n, p in model.named_parameters()}
    mode = _ParameterUse(names)
    with torch.no_grad(), mode:
        forward(*inputs)
    unused = set(names.values()) - mode.used
    found = []
    for mod_name, mod in model.named_modules():
        own = [f'{mod_name}.{n}' if mod_name else n for n, _ in mod.named_parameters()]
        if own and all(n in unused for n in own) and not any(
                mod_name == f or mod_name.startswith(f + '.') for f in found):
            found.append(mod_name)
    covered = {n for f in found for n in unused if n.startswith(f + '.')}
    return sorted(found + [n for n in unused if n not in covered])


def ris_flop_analyzer(model: nn.Module, inputs: Tuple[Tensor, ...]) -> FlopAnalyzer:
    """A :class:`FlopAnalyzer` with mmseg_ris's extra handles and mmengine's warnings switched off.

    The unsupported operators are reported by :func:`analyze_complexity` instead of being logged one
    warning at a time; its "uncalled modules" are replaced by :func:`unused_parameters`.

    Args:
        model (nn.Module): Module to trace (its ``forward`` takes ``inputs``).
        inputs (tuple[Tensor, ...]): Positional inputs of the traced forward.

    Returns:
        FlopAnalyzer: Lazy; the trace runs at the first query.
    """
    analyzer = FlopAnalyzer(model, inputs)
    analyzer.set_op_handle(**{'aten::scaled_dot_product_attention': sdpa_flop_jit,
                              'aten::baddbmm': baddbmm_flop_jit})
    analyzer.set_op_handle(**{op: None for op in ZERO_FLOP_OPS})
    analyzer.unsupported_ops_warnings(False)
    analyzer.uncalled_modules_warnings(False)
    analyzer.tracer_warnings('none')
    return analyzer


def make_flop_inputs(model: nn.Module,
                     input_size: Sequence[int],
                     num_tokens: int = 20,
                     seed: int = 0) -> Tuple[Tensor, Tensor, Tensor]:
    """One preprocessed sample: normalised image (1, 3, H, W), token ids and attention mask (1, L).

    The batch is :func:`~mmseg_ris.utils.benchmark.make_synthetic_batch` (random pixels, ``[CLS]`` +
    random words + ``[SEP]`` + padding) passed through the model's data preprocessor, as at test time.

    Args:
        model (nn.Module): The segmentor (its ``data_preprocessor`` is used and its device).
        input_size (Sequence[int]): Image ``(H, W)``.
        num_tokens (int): Token sequence length.
        seed (int): Seed of the synthetic sample.

    Returns:
        tuple[Tensor, Tensor, Tensor]: ``inputs``, ``input_ids``, ``attention_mask``.
    """
    batch = make_synthetic_batch(1, input_size, num_tokens, _vocab_size(model), seed)
    data = model.data_preprocessor(batch, False)
    samples = data['data_samples']
    input_ids = torch.stack([ds.input_ids for ds in samples]).long()
    attention_mask = torch.stack([ds.attention_mask for ds in samples]).long()
    return data['inputs'], input_ids, attention_mask


def model_parts(model: nn.Module) -> List[Tuple[str, str, Tuple[str, ...]]]:
    """The rows of the per-part breakdown: every top-level child, some split (:data:`NESTED_PARTS`).

    Args:
        model (nn.Module): The segmentor.

    Returns:
        list[tuple[str, str, tuple[str, ...]]]: ``(label, module name, names excluded from it)`` in
        display order, e.g. ``('backbone.text_encoder', 'backbone.text_encoder', ())`` and
        ``('backbone (rest)', 'backbone', ('backbone.text_encoder', 'backbone.fusions'))``. Modules
        without parameters or FLOPs (the data preprocessor) are left to the caller to drop.
    """
    parts = []
    for name, child in model.named_children():
        subs = tuple(f'{name}.{s}' for s in NESTED_PARTS.get(name, ()) if hasattr(child, s)
                     and isinstance(getattr(child, s), nn.Module))
        parts.append((f'{name} (rest)' if subs else name, name, subs))
        parts.extend((s, s, ()) for s in subs)
    return parts


def _params_by_part(model: nn.Module,
                    parts: List[Tuple[str, str, Tuple[str, ...]]]) -> Dict[str, Dict[str, int]]:
    """Exclusive parameter counts per part: each tensor goes to the first part (sub-parts first) owning it."""
    owner: Dict[int, str] = {}
    # Sub-parts claim their tensors before the "rest" row of their parent.
    order = [p for p in parts if not p[2]] + [p for p in parts if p[2]]
    for label, name, _ in order:
        for p in model.get_submodule(name).parameters():
            owner.setdefault(id(p), label)
    counts = {label: dict(total=0, trainable=0) for label, _, _ in parts}
    counts['other'] = dict(total=0, trainable=0)
    for p in model.parameters():
        c = counts[owner.get(id(p), 'other')]
        c['total'] += p.numel()
        c['trainable'] += p.numel() if p.requires_grad else 0
    return counts


def _strip(name: str) -> str:
    """Module name relative to the segmentor (``''`` for the segmentor itself)."""
    if name == _PREFIX:
        return ''
    return name[len(_PREFIX) + 1:] if name.startswith(_PREFIX + '.') else name


def analyze_complexity(model: nn.Module,
                       input_size: Sequence[int],
                       num_tokens: int = 20,
                       seed: int = 0,
                       depth: int = 0) -> Dict[str, Any]:
    """Parameters and FLOPs of one inference forward (image + expression), in total and per part.

    Args:
        model (nn.Module): A built segmentor (eval mode is set here), on its device.
        input_size (Sequence[int]): Image ``(H, W)``.
        num_tokens (int): Token sequence length.
        seed (int): Seed of the synthetic sample.
        depth (int): Also list every module down to this depth (``modules``); 0 lists none.

    Returns:
        dict: ``input`` (image shape, token count), ``flops`` (total), ``params`` (``total``,
        ``trainable``, ``frozen``), ``parts`` (list of ``{'name', 'module', 'params', 'trainable',
        'flops'}``, exclusive, summing to the totals), ``flops_by_operator``, ``unsupported_ops``
        (operator -> number of calls skipped), ``unused_parameters`` (:func:`unused_parameters`) and,
        with ``depth``, ``modules`` (``{'name', 'params', 'flops'}``).

    Raises:
        ValueError: If ``num_tokens`` < 3 or the size is not two positive integers.
    """
    if len(input_size) != 2 or any(int(s) <= 0 for s in input_size):
        raise ValueError(f'input size must be two positive integers (H, W), got {tuple(input_size)}')
    model.eval()
    inputs = make_flop_inputs(model, input_size, num_tokens, seed)
    analyzer = ris_flop_analyzer(RISTensorForward(model), inputs)
    with torch.no_grad():
        total = int(analyzer.total())
    by_module = {_strip(k): int(v) for k, v in analyzer.by_module().items()
                 if k == _PREFIX or k.startswith(_PREFIX + '.')}

    parts = model_parts(model)
    params = _params_by_part(model, parts)
    rows = []
    for label, name, excluded in parts:
        flops = by_module.get(name, 0) - sum(by_module.get(e, 0) for e in excluded)
        p = params[label]
        if p['total'] == 0 and flops == 0:
            continue  # e.g. the data preprocessor
        rows.append(dict(name=label, module=name, params=p['total'], trainable=p['trainable'],
                         flops=flops))
    other_flops = total - sum(r['flops'] for r in rows)
    if other_flops or params['other']['total']:
        rows.append(dict(name='other', module='', params=params['other']['total'],
                         trainable=params['other']['trainable'], flops=other_flops))

    unused = unused_parameters(model, RISTensorForward(model), inputs)

    report: Dict[str, Any] = dict(
        input=dict(image=[1, 3, int(input_size[0]), int(input_size[1])], num_tokens=int(num_tokens)),
        flops=total,
        params=count_parameters(model),
        parts=rows,
        flops_by_operator=dict(Counter(analyzer.by_operator()).most_common()),
        unsupported_ops=dict(Counter(analyzer.unsupported_ops()).most_common()),
        unused_parameters=unused)
    if depth > 0:
        report['modules'] = [
            dict(name=name or '(model)', params=sum(p.numel() for p in mod.parameters()),
                 flops=by_module.get(name, 0))
            for name, mod in model.named_modules()
            if name.count('.') < depth and (name == '' or not name.startswith('data_preprocessor'))
        ]
    return report


def complexity_of_config(cfg: Config,
                         input_size: Optional[Sequence[int]] = None,
                         num_tokens: int = 20,
                         device: str = 'cpu',
                         seed: int = 0,
                         depth: int = 0) -> Dict[str, Any]:
    """Build a config's model with random weights (nothing downloaded) and run :func:`analyze_complexity`.

    Args:
        cfg (Config): The config; a copy is rewritten by
            :func:`~mmseg_ris.utils.benchmark.prepare_benchmark_config`.
        input_size (Sequence[int], optional): Image ``(H, W)``; None uses the config's
            (:func:`~mmseg_ris.utils.benchmark.input_size_of`).
        num_tokens (int): Token sequence length.
        device (str): Where the model is built and traced.
        seed (int): Seed of the synthetic sample.
        depth (int): See :func:`analyze_complexity`.

    Returns:
        dict: The report of :func:`analyze_complexity` plus ``config`` (file name) and
        ``config_rewrites`` (what was changed to build without checkpoints).
    """
    cfg = copy.deepcopy(cfg)
    notes = prepare_benchmark_config(cfg)
    if input_size is None:
        input_size = input_size_of(cfg)
    else:
        set_input_size(cfg, input_size)
    model = build_benchmark_model(cfg, device)
    report = analyze_complexity(model, input_size, num_tokens, seed, depth)
    return dict(config=cfg.filename, **report, config_rewrites=notes)


def format_count(x: float) -> str:
    """``1234567`` -> ``'1.235 M'`` (K, M, G, T; plain below 1000)."""
    for unit, scale in (('T', 1e12), ('G', 1e9), ('M', 1e6), ('K', 1e3)):
        if abs(x) >= scale:
            return f'{x / scale:.3f} {unit}'
    return f'{x:.0f}'


def format_complexity(report: Dict[str, Any]) -> str:
    """The human-readable summary (Markdown tables) of a :func:`analyze_complexity` report."""
    img = report['input']['image']
    p = report['params']
    lines = []
    if report.get('config'):
        lines.append(f'config: {report["config"]}')
    lines += [
        f'input: image {img[0]}x{img[1]}x{img[2]}x{img[3]}, {report["input"]["num_tokens"]} tokens '
        '(tensor-mode forward: encoder + decode head, batch 1)',
        f'parameters: {format_count(p["total"])} total ({p["total"]:,}), '
        f'{format_count(p["trainable"])} trainable, {format_count(p["frozen"])} frozen',
        f'FLOPs: {format_count(report["flops"])} ({report["flops"]:,}; one multiply-add = 1 FLOP)',
        '',
        '| part | params | trainable | FLOPs | FLOPs % |',
        '|---|---:|---:|---:|---:|',
    ]
    total = report['flops'] or 1
    for r in report['parts']:
        lines.append(f'| {r["name"]} | {format_count(r["params"])} | {format_count(r["trainable"])} '
                     f'| {format_count(r["flops"])} | {100.0 * r["flops"] / total:.1f} |')
    lines.append(f'| total | {format_count(p["total"])} | {format_count(p["trainable"])} '
                 f'| {format_count(report["flops"])} | 100.0 |')
    ops = ', '.join(f'{k} {format_count(v)}' for k, v in report['flops_by_operator'].items())
    lines += ['', f'counted operators: {ops}']
    if report['unsupported_ops']:
        skipped = ', '.join(f'{k} x{v}' for k, v in report['unsupported_ops'].items())
        lines.append(f'operators skipped (no FLOP handle, counted as 0): {skipped}')
    if report['unused_parameters']:
        lines.append('parameters the inference forward does not use: '
                     + ', '.join(report['unused_parameters']))
    if report.get('modules'):
        lines += ['', '| module | params | FLOPs |', '|---|---:|---:|']
        for m in report['modules']:
            lines.append(f'| {m["name"]} | {format_count(m["params"])} | {format_count(m["flops"])} |')
    if report.get('config_rewrites'):
        lines += ['', 'config rewrites (random init, nothing downloaded):']
        lines += [f'  - {n}' for n in report['config_rewrites']]
    return '\n'.join(lines)
