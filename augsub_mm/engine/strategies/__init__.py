from .base import (AugSubDDPStrategy, AugSubSingleDeviceStrategy,
                   CountsIterations)
from .fsdp import AugSubFSDPStrategy

__all__ = ['AugSubDDPStrategy', 'AugSubFSDPStrategy',
           'AugSubSingleDeviceStrategy', 'CountsIterations']
