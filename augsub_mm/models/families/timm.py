"""timm models: ``TimmClassifier``'s ``model`` and ``TIMMBackbone``'s
``timm_model``.

One entry of ``FAMILIES`` (:class:`TimmFamily`) takes every timm model and
picks its adapter by what the model is built of, not by its name:

- token drop (:class:`TimmViTFamily`) where timm itself can drop patches:
  a model with a ``patch_drop`` site after the position embedding and
  blocks that are functions of the token set -- timm's
  ``VisionTransformer`` (ViT, DeiT, DeiT-III, their distilled and hybrid
  forms, CLIP-style ViTs) and ``Eva`` (EVA, EVA-02, PE), where the kept
  indices also gather the rotary embedding, in timm's own code
  (``patch_drop`` returns them; ``apply_keep_indices_nlc``), and
  ``NaFlexVit`` likewise; timm's ``CrossVit`` (:class:`TimmCrossViTFamily`)
  at the ``pos_drop`` each of its two branches calls;
- a learnable mask token after the patch embedding
  (:class:`TimmGridFamily`) for the other models that begin with a patch
  embedding (Swin, Mixer, PVT-v2, ...): their layers need the token grid;
- input masking (:class:`TimmConvFamily`) for models that begin with
  convolutions (ResNet, ConvNeXt, EfficientNet, MaxViT's conv stem, ...),
  as for mmpretrain's CNNs.

``TIMMBackbone`` gets the adapter of its ``timm_model``. AugPath drives
``timm.layers.DropPath`` and timm's ``drop_path1`` / ``drop_path2`` slots
(see :meth:`BackboneFamily.drop_path_sites`); AugDrop the blocks'
projection and MLP dropout (timm's attention, position, patch and head
dropouts are left alone).

timm is an optional extra (``pip install augsub_mm[timm]``): nothing here
imports it unless a timm model is in hand.
"""
from typing import List, Optional, Tuple

import torch
import torch.nn as nn
from torch.utils.hooks import RemovableHandle

from ..utils import masking
from .base import (NOT_BLOCK_DROPOUTS, BackboneFamily, SubPassSwitch,
                   SwitchedHook)
from .grid import GridTokenFamily, _MaskTokenHooks

#: timm's dropouts that are not the blocks' projection / MLP dropout (the
#: pooled features' dropout in front of the classifier, the patch dropout,
#: and the dropouts of SwinV2-CR's ``meta_mlp``, the network that makes the
#: relative position bias from coordinates: shared by every sample, and in
#: series with nothing of the block's path).
TIMM_NOT_BLOCK_DROPOUTS = NOT_BLOCK_DROPOUTS | {
    'head_drop', 'patch_drop', 'head', 'meta_mlp'}
#: Pooling types of timm's ViTs that are functions of the set of kept
#: tokens (class token, mean / max over tokens, attention pooling).
TOKEN_SET_POOLS = ('token', 'avg', 'max', 'avgmax', 'map')


def is_timm_model(module: nn.Module) -> bool:
    return type(module).__module__.split('.')[0] == 'timm'


def timm_model_of(module: nn.Module) -> Optional[nn.Module]:
    """The timm model ``module`` is or wraps (``TIMMBackbone``), else None."""
    if type(module).__name__ == 'TIMMBackbone' and hasattr(module,
                                                            'timm_model'):
        return module.timm_model
    return module if is_timm_model(module) else None


def _timm_class(module: str, name: str):
    import importlib
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return None


class TimmFamily(BackboneFamily):
    """The ``FAMILIES`` entry of timm models: building it returns the
    adapter the model's structure calls for (see the module docstring)."""

    name = 'timm'

    @classmethod
    def matches(cls, backbone: nn.Module) -> bool:
        return timm_model_of(backbone) is not None

    def __new__(cls, backbone: Optional[nn.Module] = None):
        # Without a backbone: copy.deepcopy / pickle rebuilding an adapter
        # of a known class (the EMA hook deep-copies the model).
        if cls is not TimmFamily or backbone is None:
            return super().__new__(cls)
        model = timm_model_of(backbone)
        for family in (TimmViTFamily, TimmCrossViTFamily, TimmGridFamily):
            if family.fits(model):
                return super().__new__(family)
        return super().__new__(TimmConvFamily)

    def __init__(self, backbone: nn.Module):
        # The hooks go on the timm model (TIMMBackbone's forward calls it).
        super().__init__(timm_model_of(backbone))

    @classmethod
    def fits(cls, model: nn.Module) -> bool:
        return True

    def dropout_layers(self) -> List[nn.Dropout]:
        layers = [m for name, m in self.backbone.named_modules()
                  if isinstance(m, nn.Dropout) and not
                  TIMM_NOT_BLOCK_DROPOUTS.intersection(name.split('.'))]
        if not layers:
            raise ValueError(
                f'AugDrop needs dropout layers inside the blocks (projection '
                f'or MLP dropout), and the timm model '
                f'{type(self.backbone).__name__} has none (timm builds them '
                'as nn.Dropout(0) where it builds them at all; its attention '
                'and head dropouts are not AugDrop\'s). Use type=\'AugPath\' '
                "(with drop_path_rate > 0 or not) or type='AugMask'.")
        return layers


class TimmConvFamily(TimmFamily):
    """timm models that start with convolutions: AugMask masks the input."""

    name = 'timm CNN'
    masking = 'input'


def patch_embed_of(model: nn.Module) -> Optional[str]:
    """Attribute path of the patch embedding a token model begins with:
    a direct child that is timm's ``PatchEmbed`` (Mixer's ``stem``), or one
    named ``patch_embed``; the first of ``patch_embeds``, one embedding per
    stage (Twins' pyramid); else such a child of a direct child (the
    ``encoder.patch_embed`` of timm's Qwen3-ViT and Gemma-4 ViT
    classifiers); None for models that begin otherwise."""
    patch_embed = _timm_class('timm.layers', 'PatchEmbed')

    def is_embed(name, child):
        # A container (CrossViT's list of embeddings, one per branch) is
        # never called itself: no site to hook.
        return not isinstance(child, (nn.ModuleList, nn.ModuleDict)) and (
            name == 'patch_embed' or (patch_embed is not None
                                      and isinstance(child, patch_embed)))

    for name, child in model.named_children():
        if is_embed(name, child):
            return name
    stages = getattr(model, 'patch_embeds', None)
    if isinstance(stages, nn.ModuleList) and len(stages):
        # One embedding per stage, the first on the input (Twins).
        return 'patch_embeds.0'
    for name, child in model.named_children():
        if isinstance(child, (nn.ModuleList, nn.ModuleDict, nn.Sequential)):
            continue
        for inner, grandchild in child.named_children():
            if is_embed(inner, grandchild):
                return f'{name}.{inner}'
    return None


class TimmCrossViTFamily(TimmFamily):
    """timm's ``CrossVit``: two ViT branches, each embedding the (resized)
    image at its own patch size, adding its class token and position
    embedding, then calling the shared ``pos_drop``; the branches exchange
    only their class tokens (cross-attention with the class token as the
    query) and pool their class token or mean patch token. Each branch's
    tokens are a set: AugMask drops patch tokens at ``pos_drop``'s output,
    at ``ratio`` of each branch, the class token always kept."""

    name = 'timm CrossViT'
    masking = 'token_drop'

    @classmethod
    def fits(cls, model: nn.Module) -> bool:
        crossvit = _timm_class('timm.models.crossvit', 'CrossVit')
        return crossvit is not None and isinstance(model, crossvit) and \
            isinstance(getattr(model, 'pos_drop', None), nn.Module)

    def check_masking(self, masking: str) -> None:
        if masking in ('token_drop', 'input'):
            return
        super().check_masking(masking)

    def token_drop_site(self) -> Tuple[nn.Module, int]:
        # Called once per branch, on (B, 1 + L_i, C).
        return self.backbone.pos_drop, 1


class TimmGridFamily(TimmFamily, GridTokenFamily):
    """timm token models whose layers need the grid: a learnable mask token
    after the patch embedding, in its own layout (NCHW, NHWC as in timm's
    Swin, or (B, N, C))."""

    name = 'timm mask-token'
    masking = 'mask_token'

    def __init__(self, backbone: nn.Module):
        super().__init__(backbone)
        self.embed = patch_embed_of(self.backbone)

    @classmethod
    def fits(cls, model: nn.Module) -> bool:
        return patch_embed_of(model) is not None

    def embed_conv_stride(self) -> Optional[int]:
        """Input pixels per token by the embedding's convolutions (the
        product of their strides, square ones only); None without one."""
        stride = None
        for module in self.embed_module().modules():
            if isinstance(module, nn.Conv2d):
                if module.stride[0] != module.stride[1]:
                    return None
                stride = (stride or 1) * module.stride[0]
        return stride

    def mask_block_tokens(self, block_pixels, stride=None):
        if stride is not None and not hasattr(self, '_conv_stride'):
            # Once: called at every sub pass, and the embedding is fixed.
            self._conv_stride = self.embed_conv_stride()
        conv = self._conv_stride if stride is not None else None
        if conv is not None and any(s % conv for s in stride):
            # Tokens counted as if each covered its own stride x stride
            # pixels, and the convolutions say otherwise: patches that
            # overlap without padding (PiT's 16 px patches every 8 px make
            # 7 tokens of 64 px, which reads as 9 px per token). A multiple
            # of the embedding's stride is a stem before it (Visformer).
            raise ValueError(
                f'AugMask cannot mask whole tokens of '
                f'{type(self.backbone).__name__} in blocks of input pixels: '
                f'its patch embedding {self.embed!r} strides {conv} px per '
                f'token but makes a grid of {stride[0]:.3g} px per token '
                '(overlapping patches without padding), so a block of '
                "tokens is no block of the image. Use masking='input' "
                '(32 x 32 px input patches, as for CNNs).')
        return super().mask_block_tokens(block_pixels, stride)

    def mask_token_hooks(self, owner, ratio, block_pixels, switch):
        site = self.embed_module()
        hooks = _NHWCMaskTokenHooks(self, owner, ratio, block_pixels)
        return [
            self.backbone.register_forward_pre_hook(
                SwitchedHook(switch, hooks.record_input)),
            site.register_forward_hook(SwitchedHook(switch, hooks.replace))
        ], site


class _NHWCMaskTokenHooks(_MaskTokenHooks):
    """:class:`_MaskTokenHooks` that also reads a (B, H, W, C) grid (timm's
    ``output_fmt='NHWC'`` patch embeddings, and PVT-v2's and HieraDet's,
    which permute to it without saying so): it is masked as the (B, H * W,
    C) tokens it holds."""

    def channels_last(self, module: nn.Module, x: torch.Tensor) -> bool:
        """Whether the 4-D output ``x`` of the embedding is (B, H, W, C):
        as the embedding says (``output_fmt``), else by the shape, else (a
        grid of side C: 16 x 16 tokens of 16 channels reads either way) by
        the embedding's last norm (a LayerNorm over the last dimension
        follows a permutation to channels last)."""
        fmt = getattr(module, 'output_fmt', None)
        if fmt is not None:
            return fmt == 'NHWC'
        channels = self.owner.mask_token.numel()
        last, first = x.shape[-1] == channels, x.shape[1] == channels
        if last != first:
            return last
        norms = [m for m in module.modules() if isinstance(
            m, (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm2d))]
        if norms:
            norm = norms[-1]
            return isinstance(norm, nn.LayerNorm) and \
                type(norm).__name__ != 'LayerNorm2d'
        raise ValueError(
            f'AugMask cannot tell the layout of the output of '
            f'{self.family.embed!r} of {type(self.family.backbone).__name__}:'
            f' {tuple(x.shape)} reads as (B, C, H, W) and as (B, H, W, C) '
            f'(a grid of side {channels}, the channels), and the embedding '
            'says neither. Use an input size whose token grid side differs '
            "from the channels, or masking='input'.")

    def replace(self, module, args, out):
        x = out[0] if isinstance(out, tuple) else out
        if x.dim() == 4 and self.channels_last(module, x):
            B, H, W, C = x.shape
            tokens = super().replace(module, args, (x.reshape(B, H * W, C),
                                                    (H, W)))[0]
            tokens = tokens.reshape(B, H, W, C)
            return tokens if not isinstance(out, tuple) else (tokens,
                                                              *out[1:])
        return super().replace(module, args, out)


class TimmViTFamily(TimmGridFamily):
    """timm's ViT relatives: patch tokens dropped at timm's own patch-drop
    site, after the position embedding; prefix tokens (class, register,
    distillation) always kept. For ``Eva`` the site returns the kept
    indices and timm gathers the rotary embedding with them."""

    name = 'timm ViT'

    @classmethod
    def token_drop_classes(cls) -> tuple:
        return tuple(c for c in (
            _timm_class('timm.models.vision_transformer',
                        'VisionTransformer'),
            _timm_class('timm.models.eva', 'Eva'),
            _timm_class('timm.models.naflexvit', 'NaFlexVit'))
            if c is not None)

    @classmethod
    def fits(cls, model: nn.Module) -> bool:
        return isinstance(model, cls.token_drop_classes()) and \
            hasattr(model, 'patch_drop') and hasattr(model,
                                                      'num_prefix_tokens')

    def is_eva(self) -> bool:
        eva = _timm_class('timm.models.eva', 'Eva')
        return eva is not None and isinstance(self.backbone, eva)

    @property
    def masking(self) -> str:
        return 'token_drop' if self.pools_token_set() else 'mask_token'

    def pools_token_set(self) -> bool:
        return getattr(self.backbone, 'global_pool', 'token') in \
            TOKEN_SET_POOLS

    def check_masking(self, masking: str) -> None:
        if masking in ('mask_token', 'input'):
            return
        if masking != 'token_drop':
            BackboneFamily.check_masking(self, masking)
        if not self.pools_token_set():
            raise ValueError(
                f'AugMask token dropping cannot form the output of '
                f'{type(self.backbone).__name__} with global_pool='
                f'{self.backbone.global_pool!r} (every token) from a subset '
                f'of the tokens. Set global_pool to one of {TOKEN_SET_POOLS}, '
                "or use AugMask(masking='mask_token').")

    def token_drop_hooks(self, ratio: float, switch: SubPassSwitch
                         ) -> Tuple[List[RemovableHandle], nn.Module]:
        model = self.backbone
        prefix = model.num_prefix_tokens
        if model.patch_drop is None:
            # Eva without patch dropout skips the site: a parameter-free
            # site that drops nothing outside the sub pass takes its place.
            site = SubPassPatchDrop(switch, ratio, prefix)
            model.patch_drop = site
            return [_Restore(model, 'patch_drop', None)], site
        drop = _KeptPatches(ratio, prefix)
        return [model.patch_drop.register_forward_hook(
            SwitchedHook(switch, drop.after_site))], model.patch_drop

    def residual_branches(self) -> List[Tuple[nn.Module, nn.Module, str]]:
        # timm's ViT Block is x + drop_path1(ls1(attn(norm1(x)))), then
        # x + drop_path2(ls2(mlp(norm2(x)))): attn and mlp treat samples
        # independently and ls is a per-channel scale. Eva's blocks take a
        # rotary embedding that may hold a batch dimension: not skipped.
        vit = _timm_class('timm.models.vision_transformer',
                          'VisionTransformer')
        if vit is None or not isinstance(self.backbone, vit):
            # NaFlexVit's blocks take an attention mask and, after timm's
            # own patch dropout, a rotary embedding with a batch dimension.
            return []
        block_type = _timm_class('timm.models.vision_transformer', 'Block')
        scale = _timm_class('timm.layers', 'LayerScale')
        per_sample = tuple(c for c in (nn.Identity, scale) if c is not None)
        branches = []
        for block in self.backbone.modules():
            if type(block) is not block_type:
                continue
            for branch, ls, slot in (('attn', 'ls1', 'drop_path1'),
                                     ('mlp', 'ls2', 'drop_path2')):
                if type(getattr(block, ls)) in per_sample:
                    branches.append((getattr(block, branch), block, slot))
        return branches


def _keep(x: torch.Tensor, ratio: float, prefix: int) -> torch.Tensor:
    length = x.shape[1] - prefix
    keep = masking.num_kept(length, ratio)
    if keep < 1:
        raise ValueError(
            f'AugMask ratio {ratio} keeps no token out of {length}; lower '
            'the ratio or use larger inputs.')
    return masking.random_keep_indices(x.shape[0], length, keep, x.device)


class _KeptPatches:
    """Drops patch tokens after timm's patch-drop site; where the site
    returns keep indices (``PatchDropoutWithIndices``), returns them
    composed with its own, so timm gathers the rotary embedding at the
    tokens finally kept."""

    def __init__(self, ratio: float, prefix: int):
        self.ratio, self.prefix = ratio, prefix

    def after_site(self, module, args, out):
        x, kept = (out if isinstance(out, tuple) else (out, None))
        idx = _keep(x, self.ratio, self.prefix)
        x = masking.drop_tokens(x, self.ratio, self.prefix, idx)
        if not isinstance(out, tuple):
            return x
        return x, idx if kept is None else kept.gather(1, idx)


class SubPassPatchDrop(nn.Module):
    """Eva's patch-drop site while AugMask is bound to a model built
    without one: ``(x, None)`` (timm's "nothing dropped") outside the sub
    pass, and the kept tokens with their indices in it."""

    def __init__(self, switch: SubPassSwitch, ratio: float, prefix: int):
        super().__init__()
        # In a tuple: the switch is no module attribute to copy or trace.
        self._switch = (switch, )
        self.ratio, self.prefix = ratio, prefix

    def forward(self, x):
        if not self._switch[0].on:
            return x, None
        idx = _keep(x, self.ratio, self.prefix)
        return masking.drop_tokens(x, self.ratio, self.prefix, idx), idx

    def extra_repr(self) -> str:
        return f'ratio={self.ratio}, prefix={self.prefix} (AugMask sub pass)'


class _Restore:
    """A handle whose ``remove()`` puts an attribute back."""

    def __init__(self, owner, name, value):
        self.owner, self.name, self.value = owner, name, value

    def remove(self):
        setattr(self.owner, self.name, self.value)
