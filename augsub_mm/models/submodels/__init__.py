from .augdrop import AugDrop
from .augmask import AugMask
from .augpath import AugPath
from .base import BaseSubModel

__all__ = ['BaseSubModel', 'AugMask', 'AugDrop', 'AugPath']
