"""AugSub for MMPretrain: sub-model regularization (AugMask, AugDrop,
AugPath) as registered OpenMMLab components. ``import augsub_mm`` (or
``custom_imports = dict(imports=['augsub_mm'])`` in a config) registers
everything and makes mmengine checkpoints loadable under torch >= 2.6."""
try:
    import mmengine  # noqa: F401
    import mmpretrain  # noqa: F401
except ImportError as error:
    raise ImportError(
        f'augsub_mm needs an OpenMMLab stack ({error}). Install one: '
        "pip install 'augsub_mm[openmmlab]' mmcv-lite (upstream mmengine "
        "0.10 + mmpretrain 1.2; or full mmcv), or pip install "
        "'augsub_mm[onedl]' (the maintained onedl fork).") from error

try:
    # `augsub_mm::` config bases (an installed wheel loads it at start).
    import augsub_mm_hook  # noqa: F401
except ImportError:  # source tree on PYTHONPATH, or an old editable install
    pass
from .checkpoint import (register_checkpoint_globals,  # noqa: E402
                         refuse_unsafe_fallback)
from .datasets import *  # noqa: F401,F403,E402
from .engine import *  # noqa: F401,F403,E402
from .models import *  # noqa: F401,F403,E402
from .version import __version__  # noqa: E402

register_checkpoint_globals()
refuse_unsafe_fallback()

__all__ = ['__version__', 'register_checkpoint_globals']
