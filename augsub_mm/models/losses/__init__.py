from .augsub_loss import AugSubLoss

__all__ = ['AugSubLoss']
