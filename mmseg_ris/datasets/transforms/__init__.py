# -- transforms (one line per module) --
from .formatting import PackRISInputs  # noqa: F401
from .loading import LoadCategoryMap, LoadRefMask  # noqa: F401
from .text import TokenizeText  # noqa: F401
