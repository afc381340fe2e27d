from contextlib import contextmanager
from typing import Iterator

import torch.nn as nn
from mmpretrain.registry import MODELS

from ..families import BackboneFamily, get_family
from .base import BaseSubModel, overridden


@MODELS.register_module()
class AugDrop(BaseSubModel):
    """Dropout sub-model (AugDrop / DropSub).

    The sub forward runs with dropout probability ``ratio`` in the blocks'
    projection and MLP dropout layers (attention-probability dropout is left
    alone); the recipe's values are restored afterwards.

    Args:
        ratio (float): Dropout probability in the sub pass, in (0, 1).
            Defaults to 0.5.
    """

    def check(self, family: BackboneFamily) -> None:
        family.dropout_layers()

    @contextmanager
    def engage(self, backbone: nn.Module) -> Iterator[None]:
        layers = get_family(backbone).dropout_layers()
        with overridden([(layer, 'p', self.ratio) for layer in layers]), \
                self.watch(layers, in_training_only=True):
            yield

    def describe(self, backbone: nn.Module) -> str:
        layers = get_family(backbone).dropout_layers()
        return f'dropout ({len(layers)} layers)'

    def inactive_reason(self, backbone: nn.Module) -> str:
        return ('its dropout layers (the blocks\' projection and MLP '
                'dropouts) were never called in training mode: the blocks '
                'are frozen (eval mode, e.g. a linear-probe config).')
