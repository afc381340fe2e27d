"""Let mmengine checkpoints load under torch's safe (``weights_only``) loader.

torch >= 2.6 refuses any pickled global that is not allow-listed, and every
mmengine training checkpoint holds a message hub with ``HistoryBuffer``
objects and numpy arrays/scalars (mmengine issue 1655), so ``--resume`` and
``load_from`` fail. We allow exactly the globals such a checkpoint needs, and
keep the safe loader on: a checkpoint that pickles anything else (a callable
that runs a command, say) is still refused.
"""
import numpy as np
import torch
from mmengine.logging import HistoryBuffer
from mmengine.utils import digit_version

_HISTORY_BUFFER_METHODS = ('min', 'max', 'current', 'mean')


def _history_buffer_getattr(obj, name):
    """Stand-in for ``builtins.getattr`` in checkpoints.

    mmengine pickles the statistics methods of ``HistoryBuffer`` as
    ``getattr(HistoryBuffer, 'mean')``; a general ``getattr`` would let a
    crafted checkpoint reach any attribute (``__init__.__globals__``, ...),
    so only those lookups are answered.
    """
    if obj is HistoryBuffer and (name in _HISTORY_BUFFER_METHODS
                                 or name in HistoryBuffer._statistics_methods):
        return getattr(obj, name)
    raise RuntimeError(
        f'Refusing getattr({obj!r}, {name!r}) while loading a checkpoint: '
        'only HistoryBuffer statistics methods are allowed.')


def _numpy_globals():
    # numpy >= 2 pickles through numpy._core, numpy 1.x through numpy.core.
    core = 'numpy._core' if hasattr(np, '_core') else 'numpy.core'
    multiarray = np._core.multiarray if hasattr(np, '_core') \
        else np.core.multiarray
    found = [
        (multiarray._reconstruct, f'{core}.multiarray._reconstruct'),
        (multiarray.scalar, f'{core}.multiarray.scalar'),
        np.ndarray,
        np.dtype,
    ]
    dtypes = getattr(np, 'dtypes', None)  # numpy >= 1.25
    if dtypes is not None:
        found += [getattr(dtypes, name) for name in dir(dtypes)
                  if name.endswith('DType')]
    return found


def safe_globals() -> list:
    """The allow-list: what an mmengine training checkpoint pickles."""
    return [HistoryBuffer, (_history_buffer_getattr, 'builtins.getattr'),
            *_numpy_globals()]


def register_checkpoint_globals() -> None:
    """Allow-list the globals of mmengine checkpoints for ``torch.load``.

    Needs torch >= 2.6: ``add_safe_globals`` takes ``(function, name)``
    pairs (our guarded ``getattr``) only from that release on, and from it
    on ``torch.load`` is safe by default."""
    if digit_version(torch.__version__) < digit_version('2.6.0'):
        raise ImportError(
            f'augsub_mm needs torch >= 2.6 (found {torch.__version__}): '
            'older releases load checkpoints with the unsafe pickle loader '
            'by default and cannot allow-list mmengine\'s checkpoint '
            'globals. Upgrade torch (and torchvision to match).')
    torch.serialization.add_safe_globals(safe_globals())


def refuse_unsafe_fallback() -> None:
    """Keep the onedl fork's checkpoint loader on the safe path.

    onedl-mmengine loads checkpoints (``load_from``, ``--resume``,
    ``load_checkpoint``) through ``mmengine.runner.checkpoint.
    _safe_torch_load``, which retries with ``weights_only=False`` -- running
    whatever the file pickles -- when the safe load fails, and whose own
    allow-list holds the unrestricted ``builtins.getattr``. With our
    allow-list every mmengine checkpoint loads safely, so that retry would
    only ever serve a file that pickles something else: it is refused
    instead. An explicit ``weights_only`` from a caller is kept. Upstream
    mmengine 0.10.7 calls ``torch.load`` (safe by default) and has no such
    function; nothing changes there.
    """
    from mmengine.runner import checkpoint as mmengine_checkpoint
    fork_load = getattr(mmengine_checkpoint, '_safe_torch_load', None)
    if fork_load is None or getattr(fork_load, 'refuses_unsafe', False):
        return

    def safe_torch_load(file, map_location=None, weights_only=None):
        return torch.load(file, map_location=map_location,
                          weights_only=True if weights_only is None
                          else weights_only)

    safe_torch_load.refuses_unsafe = True
    mmengine_checkpoint._safe_torch_load = safe_torch_load
