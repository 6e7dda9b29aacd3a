from .progress_bar_hook import RISProgressBarHook
from .ris_visualization_hook import RISVisualizationHook, render_sample, sample_iou

__all__ = ['RISProgressBarHook', 'RISVisualizationHook', 'render_sample', 'sample_iou']
