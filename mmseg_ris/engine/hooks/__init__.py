from .ris_visualization_hook import RISVisualizationHook, render_sample, sample_iou

__all__ = ['RISVisualizationHook', 'render_sample', 'sample_iou']
