"""Backbone families: the one place that decides what each sub-model does
to a backbone.

The rule, applied to every backbone class of the model zoo (each adapter
lists exact classes; subclasses: see the last item):

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
- A subclass of a listed class (a user's ``MyViT(VisionTransformer)``)
  gets its parent's adapter when it changes nothing that adapter relies on
  (no overridden method, no module class of its own); any other class in
  no list is treated like a CNN, with a warning that says why.

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
from .hf import HFFamily
from .revvit import RevViTFamily
from .swin import SwinFamily
from .timm import TimmFamily
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

    def __init__(self, backbone: nn.Module, because: str = ''):
        super().__init__(backbone)
        kind = type(backbone).__name__
        if kind not in self._warned:
            self._warned.add(kind)
            warnings.warn(
                f'augsub_mm has no adapter for {kind}'
                + (f' ({because})' if because else '') + ': AugMask masks its '
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
            *GRID_FAMILIES, TimmFamily, HFFamily, ConvFamily, UnlistedFamily]


#: Packages whose module classes a subclass of a zoo backbone may hold
#: without changing what its parent's adapter relies on.
LIBRARY_PACKAGES = ('torch', 'mmcv', 'mmengine', 'mmpretrain')


def subclass_changes(kind: type, parent: type, backbone: nn.Module) -> list:
    """What ``kind``, a subclass of the zoo backbone ``parent``, changes of
    what ``parent``'s adapter relies on: the methods it overrides (its
    forward, or what the forward calls; ``__init__`` may add to the
    parent's), and the classes of its sub-modules that are not the
    libraries' (a block, embedding or attention of its own)."""
    changes = []
    for klass in kind.__mro__[:kind.__mro__.index(parent)]:
        changes += [f'{klass.__name__}.{name}()'
                    for name, value in vars(klass).items()
                    if callable(value) and name != '__init__'
                    and hasattr(parent, name)]
    changes += sorted({
        type(m).__qualname__ for m in backbone.modules()
        if m is not backbone and type(m).__module__.split('.')[0]
        not in LIBRARY_PACKAGES})
    return changes


def get_family(backbone: nn.Module) -> BackboneFamily:
    """The adapter of ``backbone``'s family: the adapter that lists its
    class; for a subclass of a listed class, the parent's adapter if the
    subclass changes nothing it relies on (:func:`subclass_changes`), and
    the unlisted fallback otherwise, with a warning that says what
    differs."""
    listed = FAMILIES[:-1]
    found = next((f for f in listed if f.matches(backbone)), None)
    if found is not None:
        return found(backbone)
    kind = type(backbone)
    for parent in kind.__mro__[1:]:
        family = next((f for f in listed if parent in f.backbone_types),
                      None)
        if family is None:
            continue
        changes = subclass_changes(kind, parent, backbone)
        if not changes:
            return family(backbone)
        return UnlistedFamily(backbone, because=(
            f'{kind.__name__} derives from {parent.__name__} '
            f'({family.name} family) but changes what that adapter relies '
            f'on: {", ".join(changes)}'))
    return UnlistedFamily(backbone)


__all__ = ['MASKINGS', 'BackboneFamily', 'SubPassSwitch', 'SwitchedHook',
           'ViTFamily', 'SwinFamily', 'GridTokenFamily', 'ConvFamily',
           'FAMILIES', 'get_family']
