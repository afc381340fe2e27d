"""How a sub-model reaches into one backbone family.

Every backbone-specific fact the sub-models need (where the token sequence
is, which dropout / drop-path modules belong to the blocks, what AugMask
should do) lives in one :class:`BackboneFamily` subclass per family, in one
file of this package. Adding a family means adding one file and one line in
``FAMILIES`` (see ``__init__.py``).
"""
from typing import Iterator, List, Tuple

import torch.nn as nn
from mmcv.cnn.bricks import DropPath

#: What AugMask can do to a backbone's input or tokens.
MASKINGS = ('token_drop', 'mask_token', 'input')


class BackboneFamily:
    """Adapter between the sub-models and one family of backbones.

    The base class is the fallback for every backbone that has no token
    sequence (ResNet, ConvNeXt, EfficientNet, RegNet, ...): AugMask masks the
    normalised input image, AugDrop has nothing to act on, AugPath acts on
    every ``drop_path`` slot of the blocks.

    Args:
        backbone (nn.Module): The backbone the sub-model runs through.
    """

    #: Name used in error messages.
    name = 'generic CNN'
    #: What AugMask does by default for this family (one of ``MASKINGS``).
    masking = 'input'

    def __init__(self, backbone: nn.Module):
        self.backbone = backbone

    @classmethod
    def matches(cls, backbone: nn.Module) -> bool:
        """Whether this adapter handles ``backbone``."""
        return True

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

    # -- AugDrop --------------------------------------------------------
    def dropout_layers(self) -> List[nn.Dropout]:
        """The blocks' projection and MLP dropout layers."""
        raise ValueError(
            f'AugDrop needs dropout layers inside the blocks, and '
            f'{type(self.backbone).__name__} ({self.name} family) has none. '
            "Use type='AugPath' or type='AugMask' for this backbone.")

    # -- AugPath --------------------------------------------------------
    def drop_path_sites(self) -> List[Tuple[nn.Module, str]]:
        """``(parent, attribute)`` of every residual branch's drop-path slot.

        A slot holds a ``DropPath`` or, where the block was built with a drop
        rate of 0, an ``nn.Identity`` that AugPath temporarily replaces.
        """
        sites = [(parent, name)
                 for parent in self.backbone.modules()
                 for name, child in parent.named_children()
                 if isinstance(child, DropPath) or (
                     name == 'drop_path' and isinstance(child, nn.Identity))]
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


def iter_modules_of(root: nn.Module, types) -> Iterator[nn.Module]:
    """All sub-modules of ``root`` that are instances of ``types``."""
    return (m for m in root.modules() if isinstance(m, types))
