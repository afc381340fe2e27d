from .augsub_ddp import AugSubDistributedDataParallel
from .augsub_fsdp import AugSubFullyShardedDataParallel

__all__ = ['AugSubDistributedDataParallel', 'AugSubFullyShardedDataParallel']
