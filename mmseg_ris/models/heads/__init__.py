# -- training-only auxiliary heads (one line per module) --
from .mask_grounding_head import MaskGroundingHead  # noqa: F401

__all__ = ['MaskGroundingHead']
