# -- vision-language backbones (one line per module) --
from .lang_swin import LangSwinTransformer

__all__ = ['LangSwinTransformer']
