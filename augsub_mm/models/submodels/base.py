"""What every sub-model shares: a validated ratio, a build-time check
against the backbone, hooks registered once and driven by a switch that is
on only for the sub-model's pass, and the check that the sub pass really
differs from the main pass."""
from contextlib import contextmanager, nullcontext
from typing import Iterable, Iterator, List, Tuple

import numpy as np
import torch
import torch.nn as nn
from mmengine.model import BaseModule
from torch.utils.hooks import RemovableHandle

from ..families import BackboneFamily, SubPassSwitch, get_family


def unwrap_compiled(module: nn.Module) -> nn.Module:
    """The module itself for ``torch.compile(module)`` (whose class is
    torch's ``OptimizedModule``), else ``module``."""
    return getattr(module, '_orig_mod', module)


def python_float_rates(backbone: nn.Module) -> None:
    """Make the drop-path and dropout rates of ``backbone`` Python floats.

    mmpretrain draws the stochastic-depth rule with ``np.linspace``, so each
    block's ``DropPath.drop_prob`` is a NumPy scalar; torch.compile takes a
    NumPy scalar for a tensor input and breaks the graph at mmcv's ``if
    drop_prob == 0.`` in every block, main pass and sub pass alike. The
    value is the same double either way (and so is what eager mode
    computes with it)."""
    for module in backbone.modules():
        for name in ('drop_prob', 'p'):
            value = getattr(module, name, None)
            if isinstance(value, np.floating):
                setattr(module, name, float(value))


class BaseSubModel(BaseModule):
    """Base class of AugMask, AugDrop and AugPath.

    A sub-model is the main network (same weights) run under extra
    regularization. :meth:`bind` checks the backbone and registers the
    sub-model's hooks on it, once; they read :attr:`switch`, which
    :meth:`engage` turns on for the sub pass only, and do nothing while it
    is off. Subclasses say what the hooks do (:meth:`register_hooks`) and
    which attribute values change for the sub pass (:meth:`overrides`).
    Because the hooks never change, ``torch.compile`` sees them in every
    graph it traces, and guards on the switch.

    A sub-model that changes nothing (a drop-path slot no forward calls, a
    frozen backbone whose dropout and drop-path are in eval mode) would
    double the cost of training and regularize nothing. Each subclass
    therefore counts the calls that apply the sub-model
    (:meth:`count_calls`); :meth:`check_acted` (called by the classifier
    after the first sub forward, before any backward or update) raises when
    there were none. Later passes count nothing.

    Args:
        ratio (float): Strength of the regularization (mask ratio, dropout
            or drop-path probability), in (0, 1). Defaults to 0.5.
        init_cfg (dict, optional): Initialization config. Defaults to None.
    """

    #: Whether calls of modules in eval mode count as acting (masking acts
    #: in any mode; dropout and drop-path do nothing in eval mode).
    acts_in_eval = False

    def __init__(self, ratio: float = 0.5, init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) \
                or not 0 < ratio < 1:
            raise ValueError(
                f'{type(self).__name__} ratio must be a number in (0, 1), got '
                f'{ratio!r} (at 0 the sub-model is the main model). The '
                'paper uses 0.5 for every sub-model.')
        self.ratio = float(ratio)
        self.switch = SubPassSwitch()
        self._acted_checked = False
        # The backbone the hooks are on (in a tuple: not a sub-module; a deep
        # copy of the model copies it with the model), their handles, and
        # the backbone's family adapter.
        self._bound = ()
        self._handles: List[RemovableHandle] = []
        self._family = None

    def bind(self, backbone: nn.Module) -> None:
        """Check, at build time, that this sub-model can act exactly on
        ``backbone`` (raise a ValueError that says what to change if not),
        and register its hooks on it; binding again to the same backbone
        does nothing."""
        backbone = unwrap_compiled(backbone)
        if self._bound and self._bound[0] is backbone:
            return
        family = get_family(backbone)
        self.check(family)
        python_float_rates(backbone)
        self.unbind()
        self._family = family
        self._handles = list(self.register_hooks(family))
        self._bound = (backbone, )

    def unbind(self) -> None:
        """Remove the hooks :meth:`bind` registered."""
        for handle in self._handles:
            handle.remove()
        self._handles, self._bound, self._family = [], (), None

    def family(self, backbone: nn.Module) -> BackboneFamily:
        """The family adapter of ``backbone``, with the hooks bound."""
        self.bind(backbone)
        return self._family

    def check(self, family: BackboneFamily) -> None:
        raise NotImplementedError

    def register_hooks(self,
                       family: BackboneFamily) -> Iterable[RemovableHandle]:
        """Register the hooks that apply the sub-model while
        ``self.switch.on`` (and count its acting calls); return their
        handles."""
        raise NotImplementedError

    def overrides(self, family: BackboneFamily
                  ) -> List[Tuple[object, str, object]]:
        """``(object, attribute, value)`` to set for the sub pass only."""
        return []

    @contextmanager
    def engage(self, backbone: nn.Module) -> Iterator[None]:
        """Context in which ``backbone`` runs as the sub-model."""
        family = self.family(backbone)
        switch = self.switch
        if switch.on:
            raise RuntimeError(f'{type(self).__name__} is already engaged.')
        first = not self._acted_checked
        if first:
            switch.calls = 0
        with overridden(self.overrides(family)), \
                self.checking() if first else nullcontext(), \
                torch.compiler.set_stance('force_eager') \
                if first and self.eager_first_pass else nullcontext():
            switch.on = True
            try:
                yield
            finally:
                switch.on = False

    #: Whether the first sub pass (forward, backward, update) must run
    #: without torch.compile, because :meth:`checking` reads real tensors.
    eager_first_pass = False

    def checking(self):
        """Context of the first sub pass, which checks what the sub-model
        does (see :meth:`check_acted`); none by default."""
        return nullcontext()

    def describe(self, backbone: nn.Module) -> str:
        """What this sub-model does to ``backbone``, in a few words (the
        coverage matrix of ``tools/analysis_tools/zoo_coverage.py``)."""
        raise NotImplementedError

    # -- the sub pass must differ from the main pass ---------------------
    def count_calls(self, modules: Iterable[nn.Module]
                    ) -> List[RemovableHandle]:
        """Count the calls of ``modules`` that apply the sub-model (in
        training mode only, unless :attr:`acts_in_eval`) while the first
        sub pass is being checked; returns the hooks' handles."""
        return [m.register_forward_pre_hook(self._count) for m in modules]

    def _count(self, module, args):
        switch = self.switch
        # After check_acted (or a recompute in the backward): calls is None.
        if switch.on and switch.calls is not None and (
                module.training or self.acts_in_eval):
            switch.calls += 1

    def check_acted(self, backbone: nn.Module) -> None:
        """Raise if the sub pass that just ran applied the sub-model
        nowhere; called once, after the first sub forward and before its
        backward, so a no-op sub-model stops before any update."""
        if self._acted_checked or self.switch.calls is None:
            return
        calls, self.switch.calls = self.switch.calls, None
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
