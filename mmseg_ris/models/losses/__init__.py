from .cal_loss import CrossModalAlignmentLoss
from .dice_loss import ForegroundDiceLoss

__all__ = ['CrossModalAlignmentLoss', 'ForegroundDiceLoss']
