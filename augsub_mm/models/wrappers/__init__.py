from .augsub_ddp import AugSubDistributedDataParallel

__all__ = ['AugSubDistributedDataParallel']
