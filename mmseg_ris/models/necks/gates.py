"""Element-wise tanh gate used to add fused features into a stream."""

import torch.nn as nn
from mmcv.cnn import build_activation_layer
from mmengine.model import BaseModule
from mmengine.model.weight_init import constant_init, trunc_normal_init
from torch import Tensor

from mmseg.registry import MODELS
from mmseg.utils import ConfigType, OptConfigType

_INIT_MODES = ('zero_last', 'trunc_normal')


@MODELS.register_module()
class TanhGate(BaseModule):
    """Two-layer MLP ending in tanh: ``g(v) = tanh(fc2(act(fc1(v))))``.

    LAVT's language gate and MagNet's gates are this module with
    ``act_cfg=dict(type='ReLU')`` (LAVT image side, MagNet language side) or
    ``dict(type='GELU')`` (MagNet image side). The caller multiplies: a
    stream is updated as ``s + g(v) * v``. It works on the last dimension,
    so ``v`` is ``(..., channels)``.

    Initialisation (``init_mode``):

    - ``'zero_last'`` (default): ``fc1`` truncated normal (std 0.02),
      ``fc2`` zero. The gate is exactly 0 at the start, so a fusion adds
      nothing and a pretrained stream (e.g. Swin) starts unchanged, which is
      what LAVT's authors wrote in ``__init__``. Only the *last* layer is
      zeroed: with both layers zero (and no bias) every gradient of the gate
      is zero and it never learns.
    - ``'trunc_normal'``: both layers truncated normal (std 0.02). This is
      what the released LAVT / MagNet image side actually trains with: their
      zero init is overwritten by the backbone's model-wide
      ``trunc_normal_`` pass (LAVT commit ``0d1d9dc``).

    The init is applied at construction and again by :meth:`init_weights`,
    so a later model-wide ``init_weights`` call keeps the chosen policy.
    A user ``init_cfg`` replaces it.

    Args:
        channels (int): Feature width (input = hidden = output).
        act_cfg (dict): Activation between the two layers.
            Defaults to ``dict(type='ReLU')`` (LAVT).
        bias (bool): Whether the linear layers have a bias. Defaults to
            False (LAVT / MagNet).
        init_mode (str): ``'zero_last'`` or ``'trunc_normal'`` (see above).
            Defaults to ``'zero_last'``.
        init_cfg (dict, optional): mmengine init config; overrides
            ``init_mode`` when given. Defaults to None.

    Raises:
        ValueError: If ``channels`` is not a positive int or ``init_mode`` is
            unknown.
    """

    def __init__(self,
                 channels: int,
                 act_cfg: ConfigType = dict(type='ReLU'),
                 bias: bool = False,
                 init_mode: str = 'zero_last',
                 init_cfg: OptConfigType = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if not isinstance(channels, int) or channels <= 0:
            raise ValueError(f'TanhGate: channels must be a positive int, '
                             f'got {channels!r}')
        if init_mode not in _INIT_MODES:
            raise ValueError(f'TanhGate: init_mode must be one of '
                             f'{_INIT_MODES}, got {init_mode!r}')
        self.channels = channels
        self.init_mode = init_mode
        self.fc1 = nn.Linear(channels, channels, bias=bias)
        self.act = build_activation_layer(act_cfg)
        self.fc2 = nn.Linear(channels, channels, bias=bias)
        self.tanh = nn.Tanh()
        self._apply_init_mode()

    def _apply_init_mode(self) -> None:
        """Initialise ``fc1`` / ``fc2`` according to ``init_mode``."""
        trunc_normal_init(self.fc1, std=0.02, bias=0.)
        if self.init_mode == 'zero_last':
            constant_init(self.fc2, val=0., bias=0.)
        else:
            trunc_normal_init(self.fc2, std=0.02, bias=0.)

    def init_weights(self) -> None:
        """Re-apply ``init_mode`` (or the user's ``init_cfg`` if given)."""
        if self.init_cfg is not None:
            super().init_weights()
        else:
            self._apply_init_mode()

    def forward(self, x: Tensor) -> Tensor:
        """Compute the gate values.

        Args:
            x (Tensor): Features ``(..., channels)``.

        Returns:
            Tensor: Gate values in ``(-1, 1)``, same shape as ``x``.
        """
        if x.shape[-1] != self.channels:
            raise ValueError(f'TanhGate: expected {self.channels} channels '
                             f'in the last dimension, got shape '
                             f'{tuple(x.shape)}')
        return self.tanh(self.fc2(self.act(self.fc1(x))))
