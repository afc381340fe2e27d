from contextlib import contextmanager
from typing import Iterator

import torch.nn as nn
from mmcv.cnn.bricks import DropPath
from mmpretrain.registry import MODELS

from ..families import BackboneFamily, get_family
from .base import BaseSubModel, overridden


@MODELS.register_module()
class AugPath(BaseSubModel):
    """Drop-path sub-model (AugPath / PathSub).

    The sub forward runs with every residual branch's drop-path probability
    set to ``ratio``, uniform over depth; the recipe's (usually increasing)
    values are restored afterwards. Blocks built with a drop rate of 0 hold
    an ``nn.Identity``: it is swapped for a parameter-free ``DropPath`` for
    the sub pass only, so the state dict never changes.

    Args:
        ratio (float): Drop-path probability in the sub pass, in [0, 1).
            Defaults to 0.5.
    """

    def check(self, family: BackboneFamily) -> None:
        family.drop_path_sites()

    @contextmanager
    def engage(self, backbone: nn.Module) -> Iterator[None]:
        changes = []
        for parent, name in get_family(backbone).drop_path_sites():
            slot = getattr(parent, name)
            if isinstance(slot, DropPath):
                changes.append((slot, 'drop_prob', self.ratio))
            else:
                changes.append((parent, name, DropPath(self.ratio)))
        with overridden(changes):
            yield
