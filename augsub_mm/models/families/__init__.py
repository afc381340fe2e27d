"""Backbone families: the one place that decides what each sub-model does
to a backbone.

The rule, applied to every backbone class of the model zoo by its exact
class (a subclass may change what its parent's adapter relies on):

- AugMask drops tokens where every layer after the position embedding is
  the same function of any subset of the tokens (plain ViT relatives:
  :class:`ViTFamily`), or is once told the kept tokens' grid positions
  (BEiT's relative position bias, EVA-02's rotary embedding: ``beit.py``,
  ``eva02.py``); it replaces masked tokens by a learnable mask token
  after the patch embedding where layers need the token grid (windowed,
  hierarchical, metaformer and MLP backbones: :mod:`.grid`); it masks the
  input image in networks that start with convolutions rather than a patch
  embedding (ResNet and its relatives, ConvNeXt-style stems, mobile and
  hybrid CNNs: :class:`ConvFamily`), as the paper does for ResNet.
- AugDrop acts on the blocks' projection and MLP dropout modules, found by
  one rule for every family (:meth:`BackboneFamily.dropout_layers`).
- AugPath acts on every drop-path slot of the blocks.
- A backbone class in no list (a user's own) is treated like a CNN, with a
  warning that says so.

``get_family`` walks ``FAMILIES`` in order; the first adapter whose
``matches`` accepts the backbone wins.
"""
import warnings

import torch.nn as nn
from mmpretrain.models import backbones as zoo

from .base import MASKINGS, BackboneFamily, SubPassSwitch, SwitchedHook
from .beit import BEiTFamily
from .eva02 import EVA02Family
from .grid import GridTokenFamily
from .revvit import RevViTFamily
from .swin import SwinFamily
from .vit import ViTFamily


def zoo_classes(*names: str) -> tuple:
    """The backbone classes of these names that the installed mmpretrain
    (or its fork) has."""
    return tuple(getattr(zoo, n) for n in names if hasattr(zoo, n))


class ConvFamily(BackboneFamily):
    """Networks that start with convolutions: AugMask masks 32 x 32 pixel
    patches of the normalised input image (the paper's ResNet sub-model).

    Also here, by the rule above: ConvNeXt-style patchify stems (ConvNeXt,
    HorNet, EdgeNeXt, ConvMixer, RepLKNet), convolutional-attention hybrids
    whose tokens are made by convolutions inside the network (MobileViT,
    Conformer, VAN, ViG), and TNT, whose patches carry inner pixel tokens
    that one mask token cannot stand for.
    """

    name = 'CNN'
    backbone_types = zoo_classes(
        'AlexNet', 'CSPDarkNet', 'CSPNet', 'CSPResNeXt', 'CSPResNet',
        'Conformer', 'ConvMixer', 'ConvNeXt', 'DenseNet', 'EdgeNeXt',
        'EfficientNet', 'EfficientNetV2', 'HRNet', 'HorNet', 'InceptionV3',
        'LeNet5', 'MobileNetV2', 'MobileNetV3', 'MobileOne', 'MobileViT',
        'PyramidVig', 'RegNet', 'RepLKNet', 'RepVGG', 'Res2Net', 'ResNeSt',
        'ResNeXt', 'ResNet', 'ResNetV1c', 'ResNetV1d', 'ResNet_CIFAR',
        'SEResNeXt', 'SEResNet', 'ShuffleNetV1', 'ShuffleNetV2',
        'SparseConvNeXt', 'SparseResNet', 'TNT', 'VAN', 'VGG', 'Vig')


class UnlistedFamily(BackboneFamily):
    """A backbone class that no adapter lists (a user's own, or one added
    to mmpretrain after this table): treated like a CNN, said once."""

    name = 'unlisted'
    _warned = set()

    @classmethod
    def matches(cls, backbone: nn.Module) -> bool:
        return True

    def __init__(self, backbone: nn.Module):
        super().__init__(backbone)
        kind = type(backbone).__name__
        if kind not in self._warned:
            self._warned.add(kind)
            warnings.warn(
                f'augsub_mm has no adapter for {kind}: AugMask masks its '
                'input image, AugDrop uses the nn.Dropout modules of its '
                'blocks and AugPath its drop-path slots. If it is a token '
                'backbone, an adapter in augsub_mm/models/families can drop '
                'or mask its tokens instead.')


def grid_family(name: str, *types: str, embed: str = 'patch_embed'):
    """A :class:`GridTokenFamily` for the zoo classes named ``types``."""
    return type(f'{name}Family', (GridTokenFamily, ), dict(
        name=name, embed=embed,
        backbone_types=zoo_classes(*types)))


#: Mask-token families: every one hooks its patch embedding (the table is
#: the whole adaptation; see grid.py for the mechanism).
GRID_FAMILIES = [
    grid_family('DaViT', 'DaViT'),
    grid_family('EfficientFormer', 'EfficientFormer'),
    grid_family('HiViT', 'HiViT'),
    grid_family('LeViT', 'LeViT'),
    grid_family('MixMIM', 'MixMIMTransformer'),
    grid_family('MLP-Mixer', 'MlpMixer'),
    grid_family('MViT', 'MViT'),
    grid_family('PoolFormer', 'PoolFormer', 'RIFormer'),
    grid_family('RepMLP', 'RepMLPNet'),
    grid_family('TinyViT', 'TinyViT'),
    grid_family('Twins', 'PCPVT', 'SVT', embed='patch_embeds.0'),
    grid_family('XCiT', 'XCiT'),
]

#: Adapters in lookup order; the unlisted fallback comes last.
FAMILIES = [ViTFamily, RevViTFamily, BEiTFamily, EVA02Family, SwinFamily,
            *GRID_FAMILIES, ConvFamily, UnlistedFamily]


def get_family(backbone: nn.Module) -> BackboneFamily:
    """The adapter of ``backbone``'s family."""
    return next(f for f in FAMILIES if f.matches(backbone))(backbone)


__all__ = ['MASKINGS', 'BackboneFamily', 'SubPassSwitch', 'SwitchedHook',
           'ViTFamily', 'SwinFamily', 'GridTokenFamily', 'ConvFamily',
           'FAMILIES', 'get_family']
