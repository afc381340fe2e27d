from typing import List, Tuple

import torch.nn as nn
from mmpretrain.registry import MODELS
from torch.utils.hooks import RemovableHandle

from ..families import BackboneFamily, get_family
from .base import BaseSubModel, unwrap_compiled


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

    def register_hooks(self,
                       family: BackboneFamily) -> List[RemovableHandle]:
        # Found once: overrides() runs every step.
        self._layers = family.dropout_layers()
        return self.count_calls(self._layers)

    def overrides(self, family: BackboneFamily
                  ) -> List[Tuple[object, str, object]]:
        return [(layer, 'p', self.ratio) for layer in self._layers]

    def describe(self, backbone: nn.Module) -> str:
        layers = get_family(unwrap_compiled(backbone)).dropout_layers()
        return f'dropout ({len(layers)} layers)'

    def inactive_reason(self, backbone: nn.Module) -> str:
        return ('its dropout layers (the blocks\' projection and MLP '
                'dropouts) were never called in training mode: the blocks '
                'are frozen (eval mode, e.g. a linear-probe config).')
