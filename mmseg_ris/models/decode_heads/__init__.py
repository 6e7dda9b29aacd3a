# -- decode heads (one line per module) --
from .category_aux_head import CategoryAuxHead  # noqa: F401
from .lavt_head import LAVTHead  # noqa: F401
from .magnet_head import MagNetHead  # noqa: F401
from .ris_decode_head import RISBaseDecodeHead  # noqa: F401

__all__ = ['CategoryAuxHead', 'LAVTHead', 'MagNetHead', 'RISBaseDecodeHead']
