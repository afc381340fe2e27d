from .base import (AugSubDDPStrategy, AugSubSingleDeviceStrategy,
                   CountsIterations)
from .deepspeed import (AugSubDeepSpeedEngineWrapper, AugSubDeepSpeedStrategy,
                        DeepSpeedStepOptimWrapper)
from .fsdp import AugSubFSDPStrategy

__all__ = ['AugSubDDPStrategy', 'AugSubDeepSpeedEngineWrapper',
           'AugSubDeepSpeedStrategy', 'AugSubFSDPStrategy',
           'AugSubSingleDeviceStrategy', 'CountsIterations',
           'DeepSpeedStepOptimWrapper']
