from typing import List, Tuple

import torch
import torch.nn as nn
from mmpretrain.registry import MODELS
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves
from torch.utils.hooks import RemovableHandle

from ..families import BackboneFamily
from .base import BaseSubModel

#: Torch functions whose output elements each combine many input elements
#: (matrix products, convolutions, normalizations, attention, reductions,
#: pooling, resampling): a dropout mask does not pass through them as a
#: mask. Every other function (elementwise maths, activations, layer
#: scale, residual additions, reshapes, concatenations, gathers) passes a
#: dropped element on to its output.
MIXING_FUNCTIONS = frozenset((
    'linear', 'bilinear', 'matmul', '__matmul__', '__rmatmul__', 'mm',
    'bmm', 'addmm', 'baddbmm', 'addbmm', 'einsum', 'tensordot', 'conv1d',
    'conv2d', 'conv3d', 'conv_transpose1d', 'conv_transpose2d',
    'conv_transpose3d', 'layer_norm', 'group_norm', 'batch_norm',
    'instance_norm', 'rms_norm', 'local_response_norm', 'normalize',
    'softmax', 'log_softmax', 'scaled_dot_product_attention',
    'multi_head_attention_forward', 'mean', 'sum', 'nansum', 'prod', 'var',
    'std', 'var_mean', 'std_mean', 'norm', 'logsumexp', 'cumsum', 'max',
    'min', 'amax', 'amin', 'avg_pool1d', 'avg_pool2d', 'avg_pool3d',
    'max_pool1d', 'max_pool2d', 'max_pool3d', 'adaptive_avg_pool1d',
    'adaptive_avg_pool2d', 'adaptive_avg_pool3d', 'adaptive_max_pool1d',
    'adaptive_max_pool2d', 'adaptive_max_pool3d', 'interpolate', 'unfold',
    'fold', 'embedding', 'pixel_shuffle', 'pixel_unshuffle'))
#: Attribute of a tensor that holds the ids of the controlled dropout
#: layers whose mask it carries, during the first sub pass only.
MARK = '_augsub_dropped_by'


def _marks(values) -> frozenset:
    marks = frozenset()
    for value in tree_leaves(values):
        if isinstance(value, torch.Tensor):
            marks |= getattr(value, MARK, frozenset())
    return marks


def _mark(values, marks: frozenset) -> None:
    for value in tree_leaves(values):
        if isinstance(value, torch.Tensor):
            setattr(value, MARK, getattr(value, MARK, frozenset()) | marks)


class DroppedElements(TorchFunctionMode):
    """Follows, through every torch function, which tensors carry a
    controlled dropout's mask: an output carries the marks of its inputs
    unless the function mixes elements (:data:`MIXING_FUNCTIONS`). Works
    with or without autograd (gradient checkpointing, reversible layers)
    and through any module code, since it sees the functions, not the
    modules."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if getattr(func, '__name__', '') not in MIXING_FUNCTIONS:
            marks = _marks((args, kwargs))
            if marks:
                _mark(out, marks)
        return out


@MODELS.register_module()
class AugDrop(BaseSubModel):
    """Dropout sub-model (AugDrop / DropSub).

    The sub forward runs with dropout probability ``ratio`` in the blocks'
    projection and MLP dropout layers (attention-probability dropout is left
    alone); the recipe's values are restored afterwards.

    An activation goes through at most one dropout at ``ratio``. Some
    blocks apply two dropout modules in series (mmpretrain's
    ``MultiheadAttention`` computes ``out_drop(gamma1(proj_drop(x)))``,
    ``out_drop`` an ``nn.Dropout(0)`` in RevViT and EdgeNeXt): raised to
    ``ratio`` both, they would zero ``1 - (1 - ratio)^2`` of the values
    (75 % at 0.5) and scale the kept ones by ``1 / (1 - ratio)^2``. The
    first sub pass finds such chains -- a controlled dropout whose input
    carries the mask of one that ran before it, through elementwise
    functions only (:class:`DroppedElements`) -- and from then on leaves the
    later dropout of each chain at the recipe's rate, in that pass too (so
    the first pass and every later one are the same function).

    Args:
        ratio (float): Dropout probability in the sub pass, in (0, 1).
            Defaults to 0.5.
    """

    #: The chains are found in the first sub pass with real tensors: that
    #: pass (forward and backward) runs without torch.compile.
    eager_first_pass = True

    def check(self, family: BackboneFamily) -> None:
        family.dropout_layers()

    def register_hooks(self,
                       family: BackboneFamily) -> List[RemovableHandle]:
        # Found once: overrides() runs every step.
        self._layers = family.dropout_layers()
        # Modules, not ids: a deep copy of the model (EMA) maps them.
        self._followers = set()
        handles = self.count_calls(self._layers)
        for layer in self._layers:
            handles.append(layer.register_forward_pre_hook(self._follow))
            handles.append(layer.register_forward_hook(self._leave_mark))
        return handles

    def overrides(self, family: BackboneFamily
                  ) -> List[Tuple[object, str, object]]:
        self._recipe_p = {id(layer): layer.p for layer in self._layers}
        return [(layer, 'p', self.ratio) for layer in self.controlled()]

    def controlled(self) -> List[nn.Dropout]:
        """The dropout layers the sub pass sets to ``ratio``: the family's
        (:meth:`BackboneFamily.dropout_layers`) without the later layer of
        each chain the first sub pass found."""
        return [layer for layer in self._layers
                if layer not in self._followers]

    def _checking(self, module: nn.Module) -> bool:
        return self.switch.on and self.switch.calls is not None \
            and module.training

    def _follow(self, module, args):
        if self._checking(module) and _marks(args):
            # Its input already went through a controlled dropout: this
            # one stays at the recipe's rate, now and in every later pass.
            self._followers.add(module)
            module.p = self._recipe_p[id(module)]

    def _leave_mark(self, module, args, out):
        if self._checking(module) and module not in self._followers:
            _mark(out, frozenset((id(module), )))

    def checking(self) -> DroppedElements:
        return DroppedElements()

    def describe(self, backbone: nn.Module) -> str:
        self.bind(backbone)
        left = len(self._layers) - len(self.controlled())
        return f'dropout ({len(self.controlled())} layers' + (
            f'; {left} in series after one of them left at the recipe\'s '
            'rate)' if left else ')')

    def inactive_reason(self, backbone: nn.Module) -> str:
        return ('its dropout layers (the blocks\' projection and MLP '
                'dropouts) were never called in training mode: the blocks '
                'are frozen (eval mode, e.g. a linear-probe config).')
