"""Silence the upstream warnings every run of our tools would print first.

Imported first by ``tools/train.py`` and ``tools/test.py`` (the library
itself filters nothing). Only known, harmless messages, each matched by the
start of its text; any other warning still shows.
"""
import re
import warnings

KNOWN = (
    # mmcv-lite has no compiled ops; nothing in mmpretrain or augsub_mm
    # uses MultiScaleDeformableAttention.
    'Fail to import ``MultiScaleDeformableAttention``',
    # mmengine 0.10.7 imports pkg_resources (setuptools < 82), twice.
    'pkg_resources is deprecated as an API',
    # mmpretrain's MNIST reader makes tensors of read-only buffers.
    'The given NumPy array is not writable',
    # The recipes pin memory for GPUs; on a CPU-only machine torch says so.
    "'pin_memory' argument is set as true but no accelerator is found",
)

for message in KNOWN:
    warnings.filterwarnings('ignore', message=re.escape(message),
                            category=UserWarning)
