"""Safe loading of MMEngine checkpoints under ``torch.load(weights_only=True)``.

torch >= 2.6 loads with ``weights_only=True`` by default, and mmengine 0.10.7 calls ``torch.load``
without the argument, so resuming or testing an mmengine checkpoint fails on the few non-tensor objects
it stores: the message hub's ``HistoryBuffer`` and the numpy arrays and scalars in it and in ``meta``.
Instead of switching the safety off, those classes are allow-listed; the unpickler still refuses
anything else, so a checkpoint cannot run code when it is loaded.

One more obstacle: mmengine's ``HistoryBuffer.__getstate__`` pickles its statistics *functions*
(``min``, ``max``, ``mean``, ``current``), which the unpickler can only rebuild through ``getattr``, a
global that must never be allow-listed. Those four are re-registered by ``HistoryBuffer.__setstate__``
anyway, and custom ones are registered again by the code that defines them, so checkpoints written
after :func:`register_checkpoint_safe_globals` leave them out.
"""
from typing import List

import numpy as np
import torch
from mmengine.logging import HistoryBuffer


def checkpoint_safe_globals() -> List[object]:
    """The classes an mmengine checkpoint holds besides tensors and plain containers."""
    from numpy._core import multiarray
    dtype_classes = [getattr(np.dtypes, name) for name in dir(np.dtypes)
                     if name.endswith('DType') and isinstance(getattr(np.dtypes, name), type)]
    return [HistoryBuffer, multiarray.scalar, multiarray._reconstruct, np.ndarray, np.dtype,
            *dtype_classes]


def _history_buffer_getstate(self) -> dict:
    """``HistoryBuffer`` state without function objects (see the module docstring)."""
    state = self.__dict__.copy()
    state.pop('statistics_methods', None)
    return state


def register_checkpoint_safe_globals() -> None:
    """Allow-list :func:`checkpoint_safe_globals` for ``torch.load(weights_only=True)`` and make new
    checkpoints loadable that way (idempotent)."""
    torch.serialization.add_safe_globals(checkpoint_safe_globals())
    HistoryBuffer.__getstate__ = _history_buffer_getstate
