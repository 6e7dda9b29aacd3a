# -- vision-language backbones (one line per module) --
from .lang_swin import LangSwinTransformer  # noqa: F401

__all__ = ['LangSwinTransformer']
