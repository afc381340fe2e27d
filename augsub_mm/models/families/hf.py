"""transformers models: ``HuggingFaceClassifier``'s ``model`` (an
``AutoModelForImageClassification``).

One entry of ``FAMILIES`` (:class:`HFFamily`) takes every transformers model
and returns the adapter its architecture is proven exact for; any other is
refused by name (:data:`HF_UNADAPTED`):

- token drop (:class:`HFViTFamily`): ``ViTForImageClassification``,
  ``DeiTForImageClassification`` and ``...WithTeacher``. The embeddings
  module returns the class (and DeiT's distillation) token and the patch
  tokens with the position embedding added; every layer after it is a
  function of the token set, and the classifier reads token 0 (and 1):
  patch tokens are dropped at the embeddings' output, prefix tokens kept.
- a learnable mask token (:class:`HFSwinFamily`): ``SwinForImageClassification``,
  after the embeddings' LayerNorm and before the absolute position
  embedding -- where transformers' own SimMIM ``bool_masked_pos`` puts its
  mask token, and where mmpretrain's Swin (whose patch embedding holds the
  norm) gets it; the grid is the patch embeddings' ``(H, W)``.
- input masking (:class:`HFConvFamily`): models without attention (ResNet,
  ConvNeXt, RegNet, ...), as for mmpretrain's CNNs.

AugPath drives transformers' drop-path modules (``SwinDropPath``,
``ConvNextDropPath``: they read ``drop_prob`` at every call) and their
empty ``drop_path`` slots; AugDrop the blocks' hidden dropouts (not the
embeddings' dropout, not the head's; attention-probability dropout is a
float in transformers, no module).
"""
import importlib
from typing import List, Optional, Tuple

import torch.nn as nn

from .base import (NOT_BLOCK_DROPOUTS, BackboneFamily, SwitchedHook,
                   drop_path_types)
from .grid import GridTokenFamily, _MaskTokenHooks

#: Token-drop classes: (module, class name, prefix tokens).
HF_TOKEN_DROP = (
    ('transformers.models.vit.modeling_vit', 'ViTForImageClassification',
     1),
    ('transformers.models.deit.modeling_deit', 'DeiTForImageClassification',
     2),
    ('transformers.models.deit.modeling_deit',
     'DeiTForImageClassificationWithTeacher', 2),
)
HF_MASK_TOKEN = (
    ('transformers.models.swin.modeling_swin', 'SwinForImageClassification'),
)
#: Parts of a module name that are not the blocks' (AugDrop).
HF_NOT_BLOCK_DROPOUTS = NOT_BLOCK_DROPOUTS | {'embeddings', 'embedder'}

#: How an architecture without an adapter is refused.
HF_UNADAPTED = (
    'AugSub does not train the HuggingFaceClassifier model {arch}: '
    'augsub_mm has no proven adapter for this transformers architecture, '
    'so it cannot tell where a sub-model would drop tokens (the layers '
    'must be functions of the token set and the classifier must read '
    'kept tokens), place a mask token or drop paths. Adapted: '
    'ViT / DeiT (token drop), Swin (mask token) and attention-free CNNs '
    '(input masking). Use the timm or MMPretrain build of the '
    "architecture instead (TimmClassifier with model_name='...', or an "
    'ImageClassifier config), whose adapters are exact.')


def is_hf_model(module: nn.Module) -> bool:
    return type(module).__module__.split('.')[0] == 'transformers'


def _hf_class(module: str, name: str):
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return None


class HFFamily(BackboneFamily):
    """The ``FAMILIES`` entry of transformers models: building it returns
    the adapter of the model's architecture, or refuses it by name."""

    name = 'transformers'

    @classmethod
    def matches(cls, backbone: nn.Module) -> bool:
        return is_hf_model(backbone)

    def __new__(cls, backbone: Optional[nn.Module] = None):
        if cls is not HFFamily or backbone is None:
            return super().__new__(cls)
        for family in (HFViTFamily, HFSwinFamily, HFConvFamily):
            if family.fits(backbone):
                return super().__new__(family)
        raise ValueError(HF_UNADAPTED.format(arch=type(backbone).__name__))

    @classmethod
    def fits(cls, model: nn.Module) -> bool:
        return False

    def dropout_layers(self) -> List[nn.Dropout]:
        base = self.backbone.base_model
        layers = [m for name, m in base.named_modules()
                  if isinstance(m, nn.Dropout) and not
                  HF_NOT_BLOCK_DROPOUTS.intersection(name.split('.'))]
        if not layers:
            raise ValueError(
                f'AugDrop needs dropout layers inside the blocks (hidden '
                f'dropout), and the transformers model '
                f'{type(self.backbone).__name__} has none. Use '
                "type='AugPath' or type='AugMask'.")
        return layers

    def drop_path_sites(self) -> List[Tuple[nn.Module, str]]:
        types = drop_path_types()
        sites = [(parent, name)
                 for parent in self.backbone.modules()
                 for name, child in parent.named_children()
                 if isinstance(child, types) or (
                     name == 'drop_path' and isinstance(child, nn.Identity))]
        if not sites:
            raise ValueError(
                f'AugPath found no drop-path slot in the transformers model '
                f'{type(self.backbone).__name__} (its blocks have no '
                "drop_path). Use type='AugMask' or type='AugDrop'.")
        return sites


class HFViTFamily(HFFamily):
    """ViT / DeiT: patch tokens dropped at the embeddings' output."""

    name = 'transformers ViT'
    masking = 'token_drop'

    @classmethod
    def fits(cls, model: nn.Module) -> bool:
        return any(type(model) is _hf_class(m, n)
                   for m, n, _ in HF_TOKEN_DROP)

    def check_masking(self, masking: str) -> None:
        if masking in ('token_drop', 'input'):
            return
        super().check_masking(masking)

    def token_drop_site(self) -> Tuple[nn.Module, int]:
        prefix = next(p for m, n, p in HF_TOKEN_DROP
                      if type(self.backbone) is _hf_class(m, n))
        return self.backbone.base_model.embeddings, prefix


class HFSwinFamily(HFFamily, GridTokenFamily):
    """Swin: a mask token after the embeddings' LayerNorm."""

    name = 'transformers Swin'
    masking = 'mask_token'
    embed = 'swin.embeddings'

    @classmethod
    def fits(cls, model: nn.Module) -> bool:
        return any(type(model) is _hf_class(m, n) for m, n in HF_MASK_TOKEN)

    def mask_block_tokens(self, block_pixels: int, stride=None) -> int:
        projection = self.embed_module().patch_embeddings.projection
        return super().mask_block_tokens(block_pixels,
                                         tuple(projection.stride))

    def mask_token_hooks(self, owner, ratio, block_pixels, switch):
        embeddings = self.embed_module()
        hooks = _SwinMaskTokenHooks(self, owner, ratio, block_pixels)
        return [
            self.backbone.register_forward_pre_hook(
                SwitchedHook(switch, hooks.record_input)),
            embeddings.patch_embeddings.register_forward_hook(
                SwitchedHook(switch, hooks.record_grid)),
            embeddings.norm.register_forward_hook(
                SwitchedHook(switch, hooks.replace_normed)),
        ], embeddings.norm


class _SwinMaskTokenHooks(_MaskTokenHooks):
    """The grid from the patch embeddings' ``(tokens, (H, W))``, the mask
    token placed in the normed tokens."""

    grid = None

    def record_grid(self, module, args, out):
        self.grid = tuple(out[1])

    def replace_normed(self, module, args, out):
        return self.replace(module, args, (out, self.grid))[0]


class HFConvFamily(HFFamily):
    """transformers models without attention: AugMask masks the input."""

    name = 'transformers CNN'
    masking = 'input'

    @classmethod
    def fits(cls, model: nn.Module) -> bool:
        if not type(model).__name__.endswith('ForImageClassification'):
            return False
        return not any('Attention' in type(m).__name__ or isinstance(
            m, nn.MultiheadAttention) for m in model.modules()) and any(
            isinstance(m, nn.Conv2d) for m in model.modules())
