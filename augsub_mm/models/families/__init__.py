"""Backbone families: the one place that decides what each sub-model does
to a backbone. ``get_family`` walks ``FAMILIES`` in order; the first adapter
whose ``matches`` accepts the backbone wins."""
import torch.nn as nn

from .base import MASKINGS, BackboneFamily
from .swin import SwinFamily
from .vit import ViTFamily


class UnknownTokenFamily(BackboneFamily):
    """A token-based backbone (it has a ``patch_embed``) with no adapter yet.

    Masking its input still works; token dropping or a mask token would need
    knowledge of its attention (windows, relative positions) that we do not
    guess.
    """

    name = 'unsupported token-based'
    masking = None

    @classmethod
    def matches(cls, backbone: nn.Module) -> bool:
        return hasattr(backbone, 'patch_embed')

    def check_masking(self, masking: str) -> None:
        if masking == 'input':
            return
        raise ValueError(
            f'AugMask does not know how to mask the tokens of '
            f'{type(self.backbone).__name__} yet. Set '
            "augsub=dict(type='AugMask', masking='input') to mask 32x32 "
            'patches of the input image instead, or use a supported '
            f'backbone ({", ".join(f.name for f in FAMILIES[:-2])}).')

    def dropout_layers(self):
        raise ValueError(
            f'AugDrop does not support {type(self.backbone).__name__} yet; '
            'use AugMask with masking=\'input\'.')


#: Adapters in lookup order; the generic CNN fallback comes last.
FAMILIES = [ViTFamily, SwinFamily, UnknownTokenFamily, BackboneFamily]


def get_family(backbone: nn.Module) -> BackboneFamily:
    """The adapter of ``backbone``'s family."""
    return next(f for f in FAMILIES if f.matches(backbone))(backbone)


__all__ = ['MASKINGS', 'BackboneFamily', 'ViTFamily', 'SwinFamily',
           'FAMILIES', 'get_family']
