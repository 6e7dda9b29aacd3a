from .ris_inferencer import RISInferencer, foreground_probability

__all__ = ['RISInferencer', 'foreground_probability']
