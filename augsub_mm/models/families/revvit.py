"""Reversible ViT family: mmpretrain's RevVisionTransformer.

AugMask and AugDrop act as on a plain ViT (:class:`ViTFamily`). AugPath
needs one more step: a reversible layer holds no drop-path module, it builds
a new one from ``layer.drop_path_cfg`` at every call, in its forward and
again when its backward recomputes the forward (``RevBackProp``). The
adapter gives each layer the drop-path slot the other families have.
"""
from typing import List, Tuple

import torch.nn as nn
from mmcv.cnn.bricks import DropPath
from mmpretrain.models.backbones import RevVisionTransformer

from .vit import ViTFamily


class RevDropPathBuilder:
    """The ``type`` of a reversible layer's ``drop_path_cfg`` once the layer
    has a drop-path slot: it builds the layer's drop-path as mmpretrain does
    (a new ``DropPath(drop_prob)``, in training mode, at every call), except
    while the slot holds a ``DropPath`` (AugPath's sub pass), which it
    returns instead.

    An object that points to its layer, not a closure: a deep copy of the
    model (mmengine's EMA) points the copy to the copied layer.
    """

    def __init__(self, layer: nn.Module):
        self.layer = layer

    def __call__(self, drop_prob: float) -> nn.Module:
        slot = self.layer.drop_path
        return slot if isinstance(slot, DropPath) else DropPath(drop_prob)


class RevViTFamily(ViTFamily):
    """RevViT: token dropping as in a plain ViT, and a drop-path slot in
    every reversible layer for AugPath.

    Each reversible layer computes ``y1 = x1 + dp(attn(x2))``, ``y2 = x2 +
    dp(ffn(y1))`` with one drop-path draw for both branches (its forward
    reseeds the generator before each), and its backward recomputes both
    branches, reseeded the same way. The slot (``layer.drop_path``, an
    ``nn.Identity`` while no sub pass runs) is read by the layer's
    ``drop_path_cfg`` (:class:`RevDropPathBuilder`) at each of those calls:
    AugPath puts its ``DropPath(ratio)`` there for the sub pass, and the
    backward of the sub loss (which the training step runs with the sub-model
    engaged) recomputes with it too. Outside the sub pass the layer builds
    its own drop-path exactly as before. The slot is parameter-free: the
    state dict does not change.

    The layers draw their dropout and drop-path masks from seeds they take
    from the operating system (``torch.seed()``) at every forward, not from
    the sub pass's seeded stream: RevViT's dropout and drop-path masks do
    not replay on resume, in the baseline as in either pass. AugMask's
    token masks do: they are drawn before the first layer, from the stream
    of the run's seed, which the step takes once
    (:meth:`AugSubClassifier.run_seed`) rather than from
    ``torch.initial_seed()``, which each ``torch.seed()`` replaces.
    ``step_mode='joint'`` is wrong for RevViT whatever the sub-model: the
    sub forward overwrites the seeds each layer keeps for its backward, and
    the one backward then recomputes the main pass with the sub pass's draws
    (and, for AugPath, without the sub pass's slot); use the default
    ``'two_pass'``.
    """

    name = 'RevViT'
    backbone_types = (RevVisionTransformer, )

    def drop_path_sites(self) -> List[Tuple[nn.Module, str]]:
        for layer in self.backbone.layers:
            if not isinstance(layer.drop_path_cfg.get('type'),
                              RevDropPathBuilder):
                # Once per backbone; later adapters find the slots.
                layer.drop_path = nn.Identity().train(layer.training)
                layer.drop_path_cfg = dict(
                    layer.drop_path_cfg, type=RevDropPathBuilder(layer))
        return [(layer, 'drop_path') for layer in self.backbone.layers]
