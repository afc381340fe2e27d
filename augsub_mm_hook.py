"""Let mmengine resolve ``augsub_mm::`` config paths, from any launcher.

mmengine reads ``_base_ = 'pkg::path'`` only for the OpenMMLab packages of
its ``MODULE2PACKAGE`` table, and it parses a config's bases before the
config's ``custom_imports`` run: ``import augsub_mm`` would come too late
for a config that inherits ours, under mmpretrain's own ``tools/train.py``
or ``mim train``. The installed ``augsub_mm_hook.pth`` imports this small
module at interpreter start; it adds ``augsub_mm`` to that table when (and
only when) ``mmengine.config.utils`` is imported. It imports nothing
itself, so other programs start as fast as before.
"""
import sys

_TARGET = 'mmengine.config.utils'


def _register(module) -> None:
    table = getattr(module, 'MODULE2PACKAGE', None)
    if isinstance(table, dict):
        table.setdefault('augsub_mm', 'augsub_mm')


class _Finder:
    """A meta path finder that only watches for ``mmengine.config.utils``
    and lets the normal finders load it, then registers us."""

    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name != _TARGET:
            return None
        from importlib.machinery import PathFinder
        spec = PathFinder.find_spec(name, path, target)
        loader = getattr(spec, 'loader', None)
        if loader is None or not hasattr(loader, 'exec_module'):
            return spec
        exec_module = loader.exec_module

        def exec_and_register(module):
            exec_module(module)
            _register(module)

        loader.exec_module = exec_and_register
        return spec


def install() -> None:
    if _TARGET in sys.modules:
        _register(sys.modules[_TARGET])
    elif _Finder not in sys.meta_path:
        sys.meta_path.insert(0, _Finder)


install()
