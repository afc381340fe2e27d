"""How a sub-model reaches into one backbone family.

Every backbone-specific fact the sub-models need (where the token sequence
is, which dropout / drop-path modules belong to the blocks, what AugMask
should do) lives in one :class:`BackboneFamily` subclass per family, in one
file of this package. Adding a family means adding one file and one line in
``FAMILIES`` (see ``__init__.py``).
"""
import sys
from functools import partial
from typing import Callable, List, Tuple

import torch.nn as nn
from mmcv.cnn.bricks import DropPath
from torch.utils.hooks import RemovableHandle

from ..utils.masking import drop_tokens

#: What AugMask can do to a backbone's input or tokens.
MASKINGS = ('token_drop', 'mask_token', 'input')
#: Attribute names of dropout modules that AugDrop leaves alone: attention
#: probabilities (the paper's AugDrop changes projection and MLP dropout
#: only) and the position-embedding dropout in front of the blocks.
NOT_BLOCK_DROPOUTS = frozenset((
    'attn_drop', 'attn_dropout', 'attention_dropout', 'drop_after_pos',
    'pos_drop', 'position_encoding_drops'))
#: Attribute names of the drop-path slots of residual branches: mmcv's
#: (mmpretrain) and timm's, whose blocks name one slot per branch.
DROP_PATH_SLOTS = frozenset(('drop_path', 'drop_path1', 'drop_path2'))


def hf_drop_path_types() -> tuple:
    """transformers' drop-path classes of its loaded modeling modules (each
    modeling file defines its own copy, ``SwinDropPath``,
    ``ConvNextDropPath``, ...; all read ``drop_prob`` at every call)."""
    found = []
    for name, module in list(sys.modules.items()):
        if not name.startswith('transformers.models.') or module is None:
            continue
        for attr, value in list(vars(module).items()):
            if attr.endswith('DropPath') and isinstance(value, type) and \
                    issubclass(value, nn.Module) and \
                    value.__module__ == name:
                found.append(value)
    return tuple(found)


def drop_path_types() -> tuple:
    """The drop-path module classes AugPath drives: mmcv's, and timm's and
    transformers' when they are loaded (a model holding theirs has imported
    them; augsub_mm does not import either itself, optional extras)."""
    layers = sys.modules.get('timm.layers')
    timm_drop_path = getattr(layers, 'DropPath', None)
    types = (DropPath, ) if timm_drop_path is None else \
        (DropPath, timm_drop_path)
    return types + hf_drop_path_types()


class SubPassSwitch:
    """What the sub-model's hooks read: ``on`` only during the sub pass
    (forward, and backward where blocks recompute their forward), and
    ``calls``, the count of calls that applied the sub-model, while the
    first sub pass is being checked (None otherwise).

    The hooks are registered once, when the sub-model is bound to its
    backbone, and do nothing while the switch is off. ``torch.compile``
    traces them and guards on the values read here, so a compiled forward
    keeps one graph with the switch off (the main pass, validation) and one
    with it on (the sub pass); hooks added per step would not be seen by a
    graph traced before them.
    """

    def __init__(self):
        self.on = False
        self.calls = None


class SwitchedHook:
    """A forward (pre-)hook that calls ``fn(module, *args)`` only while
    ``switch.on``. An object rather than a closure: a deep copy of the model
    (mmengine's EMA) copies it along with the module it points to."""

    def __init__(self, switch: SubPassSwitch, fn: Callable):
        self.switch = switch
        self.fn = fn

    def __call__(self, module: nn.Module, *args):
        if self.switch.on:
            return self.fn(module, *args)
        return None


def _drop_site_tokens(module, args, out, ratio: float, prefix: int):
    return drop_tokens(out, ratio, prefix)


class BackboneFamily:
    """Adapter between the sub-models and one family of backbones.

    The base class does what works on any network: AugMask masks the
    normalised input image, AugDrop acts on the blocks' dropout modules,
    AugPath on every drop-path slot of the blocks. Families override what
    they know better (token dropping, a mask token, skipping work).

    Args:
        backbone (nn.Module): The backbone the sub-model runs through.
    """

    #: Name used in error messages.
    name = 'generic'
    #: What AugMask does by default for this family (one of ``MASKINGS``).
    masking = 'input'
    #: The backbone classes this adapter handles (exact classes).
    backbone_types = ()

    def __init__(self, backbone: nn.Module):
        self.backbone = backbone

    @classmethod
    def matches(cls, backbone: nn.Module) -> bool:
        """Whether this adapter handles ``backbone``: its exact class is
        listed (a subclass may change what the adapter relies on:
        :func:`~augsub_mm.models.families.get_family` decides for
        subclasses)."""
        return type(backbone) in cls.backbone_types

    # -- AugMask --------------------------------------------------------
    def check_masking(self, masking: str) -> None:
        """Raise if ``masking`` cannot be done exactly on this backbone."""
        if masking == 'input':
            return
        raise ValueError(
            f'AugMask masking={masking!r} is not available for '
            f'{type(self.backbone).__name__} ({self.name} family); use '
            f"masking='{self.masking}' (or 'auto'), or masking='input' to "
            'mask 32x32 patches of the input image.')

    def token_drop_site(self) -> Tuple[nn.Module, int]:
        """The module whose output is the (B, N, C) token sequence to drop
        from, and the number of prefix tokens (class token, ...) it holds."""
        raise NotImplementedError

    def token_drop_hooks(self, ratio: float, switch: SubPassSwitch
                         ) -> Tuple[List[RemovableHandle], nn.Module]:
        """Hook :meth:`token_drop_site` so that, while ``switch`` is on, its
        output keeps ``int(L * (1 - ratio))`` random patch tokens per
        sample; returns the hooks' handles and the module whose call applies
        the masking."""
        site, prefix = self.token_drop_site()
        hook = SwitchedHook(switch, partial(_drop_site_tokens, ratio=ratio,
                                            prefix=prefix))
        return [site.register_forward_hook(hook)], site

    # -- AugDrop --------------------------------------------------------
    def dropout_layers(self) -> List[nn.Dropout]:
        """The blocks' projection and MLP dropout layers.

        The rule, for every family: every ``nn.Dropout`` module of the
        backbone except attention-probability dropouts and the dropout of
        the position embedding (see :data:`NOT_BLOCK_DROPOUTS`, matched on
        any part of the module's name). Families whose modules are named
        otherwise override this.
        """
        layers = [m for name, m in self.backbone.named_modules()
                  if isinstance(m, nn.Dropout) and not
                  NOT_BLOCK_DROPOUTS.intersection(name.split('.'))]
        if not layers:
            raise ValueError(
                f'AugDrop needs dropout layers inside the blocks (projection '
                f'or MLP dropout), and {type(self.backbone).__name__} '
                f'({self.name} family) has none. Use type=\'AugPath\' or '
                "type='AugMask' for this backbone.")
        return layers

    # -- AugPath --------------------------------------------------------
    def drop_path_sites(self) -> List[Tuple[nn.Module, str]]:
        """``(parent, attribute)`` of every residual branch's drop-path slot.

        A slot holds a ``DropPath`` or, where the block was built with a drop
        rate of 0, an ``nn.Identity`` that AugPath temporarily replaces.
        """
        types = drop_path_types()
        sites = [(parent, name)
                 for parent in self.backbone.modules()
                 for name, child in parent.named_children()
                 if isinstance(child, types) or (
                     name in DROP_PATH_SLOTS
                     and isinstance(child, nn.Identity))]
        if not sites:
            raise ValueError(
                f'AugPath found no drop-path slot in '
                f'{type(self.backbone).__name__} ({self.name} family). '
                "Use type='AugMask' for this backbone.")
        return sites

    def residual_branches(self) -> List[Tuple[nn.Module, nn.Module, str]]:
        """Residual branches that AugPath may run on kept samples only.

        Each item is ``(branch, parent, name)``: ``branch`` treats samples
        independently, ``parent.name`` is the drop-path slot of that residual
        branch, and between ``branch``'s output and the slot lie only
        per-sample linear maps (e.g. layer scale). Families that do not know
        their blocks that well return none: AugPath then drops paths without
        skipping work.
        """
        return []
