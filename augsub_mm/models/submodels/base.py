"""What every sub-model shares: a validated ratio, a build-time check
against the backbone, and a context manager that is in effect only for the
sub-model's forward pass."""
from contextlib import contextmanager
from typing import Iterator, List, Tuple

import torch.nn as nn
from mmengine.model import BaseModule

from ..families import BackboneFamily, get_family


class BaseSubModel(BaseModule):
    """Base class of AugMask, AugDrop and AugPath.

    A sub-model is the main network (same weights) run under extra
    regularization; subclasses say which, through :meth:`engage`.

    Args:
        ratio (float): Strength of the regularization (mask ratio, dropout
            or drop-path probability), in [0, 1). Defaults to 0.5.
        init_cfg (dict, optional): Initialization config. Defaults to None.
    """

    def __init__(self, ratio: float = 0.5, init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) \
                or not 0 <= ratio < 1:
            raise ValueError(
                f'{type(self).__name__} ratio must be a number in [0, 1), got '
                f'{ratio!r}. The paper uses 0.5 for every sub-model.')
        self.ratio = float(ratio)

    def bind(self, backbone: nn.Module) -> None:
        """Check, at build time, that this sub-model can act exactly on
        ``backbone``; raise a ValueError that says what to change if not."""
        self.check(get_family(backbone))

    def check(self, family: BackboneFamily) -> None:
        raise NotImplementedError

    @contextmanager
    def engage(self, backbone: nn.Module) -> Iterator[None]:
        """Context in which ``backbone`` runs as the sub-model."""
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f'ratio={self.ratio}'


@contextmanager
def overridden(attrs: List[Tuple[object, str, object]]) -> Iterator[None]:
    """Set ``obj.name = value`` for each item, and restore every old value on
    exit, also when the body raises."""
    saved = [(obj, name, getattr(obj, name)) for obj, name, _ in attrs]
    try:
        for obj, name, value in attrs:
            setattr(obj, name, value)
        yield
    finally:
        for obj, name, value in reversed(saved):
            setattr(obj, name, value)
