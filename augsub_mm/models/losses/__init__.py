from .augsub_loss import AugSubLoss
from .binary_cross_entropy_loss import BinaryCrossEntropyLoss

__all__ = ['AugSubLoss', 'BinaryCrossEntropyLoss']
