"""``--amp`` of ``tools/train.py``: the mixed-precision optimizer wrapper for the device."""
import logging
from typing import Optional

import torch
from mmengine.config import Config
from mmengine.logging import print_log

AMP_WRAPPERS = ('AmpOptimWrapper', 'CPUAmpOptimWrapper')


def enable_amp(cfg: Config, cuda: Optional[bool] = None) -> None:
    """Switch ``cfg.optim_wrapper`` to mixed precision, in place.

    With CUDA: mmengine's ``AmpOptimWrapper`` (float16, dynamic loss scale),
    as mmseg's ``--amp``. Without: :class:`CPUAmpOptimWrapper` (bfloat16
    autocast), because mmengine's wrapper refuses to build on a CPU-only
    machine. A config that already uses one of them is left as it is.

    Args:
        cfg (Config): The training config.
        cuda (bool, optional): Whether CUDA is used; None asks
            ``torch.cuda.is_available()``. Defaults to None.

    Raises:
        ValueError: If the config's optimizer wrapper is another type
            (e.g. a custom one) that cannot be switched.
    """
    wrapper = cfg.optim_wrapper.get('type', 'OptimWrapper')
    if wrapper in AMP_WRAPPERS:
        print_log('AMP training is already enabled in your config.', logger='current',
                  level=logging.WARNING)
        return
    if wrapper != 'OptimWrapper':
        raise ValueError(f'--amp needs optim_wrapper.type OptimWrapper, got {wrapper!r}')
    if torch.cuda.is_available() if cuda is None else cuda:
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.loss_scale = 'dynamic'
    else:
        cfg.optim_wrapper.type = 'CPUAmpOptimWrapper'
