"""Mask-token families: backbones whose layers need the token grid.

Windowed, hierarchical, convolutional-token and MLP backbones mix tokens by
their place on a grid (windows, convolutions, pooling, token-mixing MLPs,
relative positions): dropping tokens would change what the remaining ones
compute. AugMask keeps the grid and replaces the masked tokens, right after
the patch embedding, by one learnable mask token, in square blocks of
``input_patch_size`` input pixels chosen per sample -- the paper's Swin
sub-model, for every backbone with a patch embedding.

One mechanism serves them all: :class:`GridTokenFamily` hooks the module
named by ``embed`` and replaces masked positions in its output, whatever
its layout (read from the output itself):

- a feature map (B, C, H, W);
- tokens (B, H * W, C), alone or as ``(tokens, (H, W))``;
- tokens with inner structure (B, H * W, ..., C) (HiViT's inner patches:
  a masked patch masks all of its inner tokens).

A family is one subclass naming its backbone classes and, where it is not
``patch_embed``, its embedding module.
"""
import math
from typing import List, Optional, Tuple, Union

import torch
import torch.nn as nn
from torch.utils.hooks import RemovableHandle

from ..utils.masking import (auto_block_tokens, block_mask,
                             expand_block_mask)
from .base import BackboneFamily, SubPassSwitch, SwitchedHook


def replace_masked_tokens(x: torch.Tensor, hw_shape: Tuple[int, int],
                          mask_token: torch.Tensor, ratio: float,
                          block: int) -> torch.Tensor:
    """Replace ``ratio`` of the blocks of a token grid by ``mask_token``.

    The grid is cut into ``block`` x ``block`` token blocks, and
    ``n - int(n * (1 - ratio))`` of its ``n`` blocks are masked, chosen
    independently per sample. A grid side that is not a multiple of
    ``block`` ends in partial blocks, which count like full ones (as in
    :func:`~augsub_mm.models.utils.mask_input_patches`).

    Args:
        x (Tensor): Tokens (B, H * W, ..., C) in row-major grid order, or a
            feature map (B, C, H, W) when ``hw_shape`` is None.
        hw_shape (tuple[int, int], optional): The grid size (H, W) of
            token input; None for a feature map.
        mask_token (Tensor): The token (C, ) put at masked positions.
        ratio (float): Fraction of blocks masked, in (0, 1).
        block (int): Block side, in tokens.

    Returns:
        Tensor: Same shape as ``x``.

    Examples:
        >>> x = torch.rand(2, 7 * 7, 8)
        >>> token = torch.zeros(8)
        >>> out = replace_masked_tokens(x, (7, 7), token, 0.5, block=2)
        >>> out.shape
        torch.Size([2, 49, 8])
    """
    B = x.shape[0]
    H, W = hw_shape if hw_shape is not None else x.shape[-2:]
    blocks = block_mask(B, math.ceil(H / block), math.ceil(W / block), ratio,
                        x.device)
    masked = expand_block_mask(blocks, block, H, W)
    token = mask_token.to(x.dtype)
    if hw_shape is None:
        # Cropped partial border blocks make it non-contiguous: reshape.
        return torch.where(masked.reshape(B, 1, H, W),
                           token.view(1, -1, 1, 1), x)
    masked = masked.reshape(B, H * W, *[1] * (x.dim() - 2))
    return torch.where(masked, token, x)


def token_stride(pixels: int, tokens: int):
    """Input pixels per token along one side, when ``tokens`` is what an
    embedding of a whole stride makes of ``pixels`` (a convolution without
    padding floors, a padded one ceils); else the fraction."""
    for stride in {pixels // tokens, -(-pixels // tokens)}:
        if stride > 0 and tokens in (pixels // stride, -(-pixels // stride)):
            return stride
    return pixels / tokens


class GridTokenFamily(BackboneFamily):
    """A backbone whose layers need the token grid: AugMask replaces masked
    tokens by a learnable mask token after ``embed``.

    Subclasses set ``backbone_types`` (exact classes: a subclass may change
    what follows the embedding) and, where it is not ``patch_embed``,
    ``embed``.
    """

    name = 'mask-token'
    masking = 'mask_token'
    #: Attribute path of the patch embedding, from the backbone.
    embed = 'patch_embed'

    def check_masking(self, masking: str) -> None:
        if masking in ('mask_token', 'input'):
            return
        super().check_masking(masking)

    def embed_module(self) -> nn.Module:
        module = self.backbone
        for name in self.embed.split('.'):
            module = module[int(name)] if name.isdigit() else \
                getattr(module, name)
        return module

    # -- AugMask: mask token -------------------------------------------
    def mask_token_dims(self) -> int:
        """Channels of the mask token: the output channels of the
        embedding's last convolution or linear layer."""
        last = None
        for module in self.embed_module().modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                last = module
        if last is None:
            raise ValueError(
                f'AugMask cannot tell the channels of the patch embedding '
                f'{self.embed!r} of {type(self.backbone).__name__}: it has no '
                "convolution or linear layer. Use masking='input'.")
        return getattr(last, 'out_channels', None) or last.out_features

    def mask_token_anchor(self) -> nn.Module:
        """The module whose learning rate the mask token shares: it sits at
        the depth of the patch embedding (layer 0 of layer-wise lr decay)."""
        return self.embed_module()

    def mask_block_tokens(self, block_pixels: Union[int, str],
                          stride: Optional[Tuple[int, int]] = None) -> int:
        """Side of a masking block in tokens, for a token stride (pixels per
        token) ``stride``; raises if ``block_pixels`` is not a whole number
        of tokens; ``'auto'``: the whole number of tokens nearest to 32 px
        (:func:`masking.auto_block_tokens`). Without ``stride`` (at build
        time) nothing is checked: the first sub pass checks what the
        embedding really outputs."""
        if stride is None:
            return 0
        if any(float(s) != int(s) for s in stride):
            raise ValueError(
                f'AugMask cannot mask whole tokens of '
                f'{type(self.backbone).__name__} in blocks of input pixels: '
                f'the output of {self.embed!r} does not tile the input in '
                f'whole pixels ({stride[0]:.3g} x {stride[1]:.3g} input '
                'pixels per token: overlapping or padded patches), so a '
                'block of tokens is no block of the image. Use '
                "masking='input' (32 x 32 px input patches, as for CNNs), or "
                'an input size whose token grid divides it.')
        if stride[0] != stride[1]:
            raise ValueError(
                f'AugMask cannot mask square blocks of whole tokens of '
                f'{type(self.backbone).__name__}: the output of '
                f'{self.embed!r} has {stride[0]} x {stride[1]} input pixels '
                'per token. Use a square input, or masking=\'input\'.')
        if block_pixels == 'auto':
            return auto_block_tokens(int(stride[0]))
        if block_pixels % stride[0]:
            raise ValueError(
                f'AugMask input_patch_size={block_pixels} must be a multiple '
                f'of the token stride of {type(self.backbone).__name__} '
                f'({stride[0]} x {stride[1]} input pixels per token at the '
                f'output of {self.embed!r}), so that masked blocks are whole '
                f'tokens. Set AugMask(input_patch_size=...) to a multiple of '
                f'{stride[0]}; the paper uses 32 with Swin\'s 4.')
        return block_pixels // stride[0]

    def mask_token_hooks(self, owner: nn.Module, ratio: float,
                         block_pixels: int, switch: SubPassSwitch
                         ) -> Tuple[List[RemovableHandle], nn.Module]:
        """Hook the embedding so that, while ``switch`` is on, ``ratio`` of
        the blocks of ``block_pixels`` pixels of its output are replaced by
        ``owner.mask_token`` (read at each call: wrappers such as FSDP may
        swap the parameter object); returns the handles and the hooked
        module."""
        site = self.embed_module()
        hooks = _MaskTokenHooks(self, owner, ratio, block_pixels)
        handles = [
            self.backbone.register_forward_pre_hook(
                SwitchedHook(switch, hooks.record_input)),
            site.register_forward_hook(SwitchedHook(switch, hooks.replace))
        ]
        return handles, site


class _MaskTokenHooks:
    """The two hooks of :meth:`GridTokenFamily.mask_token_hooks`: the
    backbone's input size (for the token stride), then the masking of the
    embedding's output."""

    def __init__(self, family: GridTokenFamily, owner: nn.Module,
                 ratio: float, block_pixels: int):
        self.family = family
        self.owner = owner
        self.ratio = ratio
        self.block_pixels = block_pixels
        self.input_hw = None

    def record_input(self, module, args):
        self.input_hw = tuple(args[0].shape[-2:])

    def replace(self, module, args, out):
        family, mask_token = self.family, self.owner.mask_token
        name = type(family.backbone).__name__
        x, rest = (out[0], out[1:]) if isinstance(out, tuple) else (out, None)
        if x.dim() == 4 and x.shape[1] == mask_token.numel():
            hw = None
            H, W = x.shape[-2:]
        else:
            if x.shape[-1] != mask_token.numel():
                raise ValueError(
                    f'AugMask: the output of {family.embed!r} of {name} has '
                    f'shape {tuple(x.shape)}, which is neither (B, C, H, W) '
                    f'nor (B, N, ..., C) with C={mask_token.numel()}; the '
                    "mask token cannot be placed. Use masking='input'.")
            # (tokens, (H, W)); not (tokens, position ids, ...) as timm's
            # Gemma-4 ViT embedding returns, a tensor whatever its length.
            hw = tuple(rest[0]) if rest and isinstance(
                rest[0], (tuple, list)) and len(rest[0]) == 2 else \
                (math.isqrt(x.shape[1]), ) * 2
            if hw[0] * hw[1] != x.shape[1]:
                raise ValueError(
                    f'AugMask cannot read the token grid of {name}: '
                    f"{x.shape[1]} tokens are not a square grid. Use "
                    "masking='input'.")
            H, W = hw
        in_h, in_w = self.input_hw
        block = family.mask_block_tokens(
            self.block_pixels, (token_stride(in_h, H), token_stride(in_w, W)))
        x = replace_masked_tokens(x, hw, mask_token, self.ratio, block)
        return x if rest is None else (x, *rest)
