from .overlay import draw_ris_overlay

__all__ = ['draw_ris_overlay']
from .worst import load_per_sentence, rank_worst, render_worst  # noqa: E402

__all__ += ['load_per_sentence', 'rank_worst', 'render_worst']
