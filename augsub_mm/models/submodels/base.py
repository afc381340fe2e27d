"""What every sub-model shares: a validated ratio, a build-time check
against the backbone, a context manager that is in effect only for the
sub-model's pass, and the check that the sub pass really differs from the
main pass."""
from contextlib import contextmanager
from typing import Iterable, Iterator, List, Tuple

import torch.nn as nn
from mmengine.model import BaseModule

from ..families import BackboneFamily, get_family


class BaseSubModel(BaseModule):
    """Base class of AugMask, AugDrop and AugPath.

    A sub-model is the main network (same weights) run under extra
    regularization; subclasses say which, through :meth:`engage`.

    A sub-model that changes nothing (a drop-path slot no forward calls, a
    frozen backbone whose dropout and drop-path are in eval mode) would
    double the cost of training and regularize nothing. Each subclass
    therefore names, in :meth:`engage`, the modules whose call applies the
    sub-model (:meth:`watch`); the first sub pass counts those calls, and
    :meth:`check_acted` (called by the classifier after the sub forward,
    before any backward or update) raises when there were none. Later passes
    count nothing.

    Args:
        ratio (float): Strength of the regularization (mask ratio, dropout
            or drop-path probability), in (0, 1). Defaults to 0.5.
        init_cfg (dict, optional): Initialization config. Defaults to None.
    """

    def __init__(self, ratio: float = 0.5, init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) \
                or not 0 < ratio < 1:
            raise ValueError(
                f'{type(self).__name__} ratio must be a number in (0, 1), got '
                f'{ratio!r} (at 0 the sub-model is the main model). The '
                'paper uses 0.5 for every sub-model.')
        self.ratio = float(ratio)
        # None until the first sub pass has been checked (see check_acted).
        self._acting_calls = None
        self._acted_checked = False

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

    def describe(self, backbone: nn.Module) -> str:
        """What this sub-model does to ``backbone``, in a few words (the
        coverage matrix of ``tools/analysis_tools/zoo_coverage.py``)."""
        raise NotImplementedError

    # -- the sub pass must differ from the main pass ---------------------
    @contextmanager
    def watch(self, modules: Iterable[nn.Module],
              in_training_only: bool) -> Iterator[None]:
        """Count the calls of ``modules`` that apply the sub-model (those in
        training mode only, if ``in_training_only``: dropout and drop-path
        do nothing in eval mode), until :meth:`check_acted` has passed
        once."""
        if self._acted_checked:
            yield
            return
        if self._acting_calls is None:
            self._acting_calls = 0

        def count(module, args):
            # After check_acted (a recompute in the backward): nothing to do.
            if self._acting_calls is not None and (
                    module.training or not in_training_only):
                self._acting_calls += 1

        handles = [m.register_forward_pre_hook(count) for m in modules]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def check_acted(self, backbone: nn.Module) -> None:
        """Raise if the sub pass that just ran applied the sub-model
        nowhere; called once, after the first sub forward and before its
        backward, so a no-op sub-model stops before any update."""
        if self._acted_checked or self._acting_calls is None:
            return
        calls, self._acting_calls = self._acting_calls, None
        if calls == 0:
            raise RuntimeError(
                f'{type(self).__name__} changed nothing in the sub pass of '
                f'{type(backbone).__name__}: {self.inactive_reason(backbone)} '
                'The sub pass would equal the main pass (twice the cost, no '
                'regularization). Use another sub-model '
                f'({self.alternatives()}) or unfreeze the blocks.')
        self._acted_checked = True

    def inactive_reason(self, backbone: nn.Module) -> str:
        """Why no call of the watched modules applied the sub-model."""
        return 'none of the modules it acts through ran in training mode.'

    def alternatives(self) -> str:
        others = [n for n in ('AugMask', 'AugDrop', 'AugPath')
                  if n != type(self).__name__]
        return ' or '.join(f"type='{n}'" for n in others)

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
