"""Language encoders (registered into mmseg's MODELS)."""
from .bert_encoder import BertLanguageEncoder

__all__ = ['BertLanguageEncoder']
