"""Checks shared by the fusion modules (PWAM, CAM, ...), which all take the same four inputs."""
from typing import Sequence

from torch import Tensor


def check_fusion_inputs(name: str, x: Tensor, hw: Sequence[int], lang: Tensor, lang_mask: Tensor,
                        vis_channels: int, lang_channels: int) -> None:
    """Raise a ValueError naming the fusion module and the argument whose shape is wrong.

    Args:
        name (str): The module's name, for the message.
        x (Tensor): Visual tokens (B, H*W, vis_channels).
        hw (Sequence[int]): (H, W) of the visual map.
        lang (Tensor): Word features (B, L, lang_channels).
        lang_mask (Tensor): Word mask (B, L).
        vis_channels (int): Expected visual width.
        lang_channels (int): Expected word width.
    """
    if x.dim() != 3 or x.shape[2] != vis_channels:
        raise ValueError(f'{name}: x must be (B, H*W, {vis_channels}), got {tuple(x.shape)}')
    if len(hw) != 2 or hw[0] * hw[1] != x.shape[1]:
        raise ValueError(f'{name}: hw={tuple(hw)} does not match the {x.shape[1]} tokens of x')
    if lang.dim() != 3 or lang.shape[0] != x.shape[0] or lang.shape[2] != lang_channels:
        raise ValueError(f'{name}: lang must be (B={x.shape[0]}, L, {lang_channels}), '
                         f'got {tuple(lang.shape)}')
    if tuple(lang_mask.shape) != tuple(lang.shape[:2]):
        raise ValueError(f'{name}: lang_mask must be (B, L)={tuple(lang.shape[:2])}, '
                         f'got {tuple(lang_mask.shape)}')
