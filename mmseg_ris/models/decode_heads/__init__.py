# -- decode heads (one line per module) --
from .lavt_head import LAVTHead  # noqa: F401
from .magnet_head import MagNetHead  # noqa: F401
from .ris_decode_head import RISBaseDecodeHead  # noqa: F401

__all__ = ['LAVTHead', 'MagNetHead', 'RISBaseDecodeHead']
