"""AugSub for MMPretrain: sub-model regularization (AugMask, AugDrop,
AugPath) as registered OpenMMLab components. ``import augsub_mm`` (or
``custom_imports = dict(imports=['augsub_mm'])`` in a config) registers
everything and makes mmengine checkpoints loadable under torch >= 2.6."""
from .checkpoint import register_checkpoint_globals
from .datasets import *  # noqa: F401,F403
from .engine import *  # noqa: F401,F403
from .models import *  # noqa: F401,F403
from .version import __version__

register_checkpoint_globals()

__all__ = ['__version__', 'register_checkpoint_globals']
