# -- fusion modules (one line per module) --
from .cam import CAM  # noqa: F401
from .gates import TanhGate  # noqa: F401
from .pwam import PWAM  # noqa: F401

__all__ = ['PWAM', 'TanhGate']
