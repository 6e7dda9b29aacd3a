"""Mixed-precision training on CPU (bfloat16 autocast)."""
from contextlib import contextmanager
from typing import Union

import torch
import torch.nn as nn
from mmengine.optim import OptimWrapper

from mmseg.registry import OPTIM_WRAPPERS

_DTYPES = ('bfloat16', )


@OPTIM_WRAPPERS.register_module()
class CPUAmpOptimWrapper(OptimWrapper):
    """:class:`~mmengine.optim.OptimWrapper` whose forward runs under CPU autocast.

    mmengine's ``AmpOptimWrapper`` refuses to build without CUDA / NPU / MLU,
    so ``--amp`` cannot be used for CPU training with it. On CPU the
    low-precision type is bfloat16: it has float32's exponent range, so no
    loss scaling is needed and the backward / optimizer step are those of
    :class:`OptimWrapper`. Matrix products and convolutions run in bfloat16;
    reductions, normalisations and losses stay in float32 (PyTorch's CPU
    autocast op lists). Parameters, gradients and optimizer state stay in
    float32, so checkpoints are the same as without it.

    ``tools/train.py --amp`` picks this wrapper when CUDA is not available.

    Args:
        dtype (str or torch.dtype): Autocast type; only ``'bfloat16'``.
            Defaults to ``'bfloat16'``.
        **kwargs: :class:`OptimWrapper` arguments (``optimizer``,
            ``accumulative_counts``, ``clip_grad``).

    Raises:
        ValueError: If ``dtype`` is not bfloat16 (float16 would need loss
            scaling, which CPU training does not provide).
    """

    def __init__(self, dtype: Union[str, torch.dtype] = 'bfloat16', **kwargs) -> None:
        name = dtype if isinstance(dtype, str) else str(dtype).replace('torch.', '')
        if name not in _DTYPES:
            raise ValueError(f'CPUAmpOptimWrapper: dtype must be one of {_DTYPES}, got {dtype!r}')
        super().__init__(**kwargs)
        self.cast_dtype = getattr(torch, name)

    @contextmanager
    def optim_context(self, model: nn.Module):
        """Run the forward under ``torch.autocast('cpu', dtype=bfloat16)``.

        Gradient-accumulation no-sync handling is :class:`OptimWrapper`'s.

        Args:
            model (nn.Module): The training model.
        """
        with super().optim_context(model), torch.autocast('cpu', dtype=self.cast_dtype):
            yield
