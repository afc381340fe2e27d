"""Swin family: mmpretrain's SwinTransformer and SwinTransformerV2."""
import math
from typing import List, Tuple

import torch
import torch.nn as nn
from mmcv.cnn.bricks.transformer import FFN
from mmpretrain.models.backbones import SwinTransformer, SwinTransformerV2
from mmpretrain.models.backbones.swin_transformer import SwinBlock
from mmpretrain.models.utils import ShiftWindowMSA, WindowMSA, WindowMSAV2
from torch.utils.hooks import RemovableHandle

from ..utils.masking import block_mask, expand_block_mask
from .base import BackboneFamily, iter_modules_of


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
        x (Tensor): Tokens (B, H * W, C) in row-major order.
        hw_shape (tuple[int, int]): The grid size (H, W).
        mask_token (Tensor): The token (C, ) put at masked positions.
        ratio (float): Fraction of blocks masked, in [0, 1).
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
    H, W = hw_shape
    blocks = block_mask(B, math.ceil(H / block), math.ceil(W / block), ratio,
                        x.device)
    # Cropped partial border blocks make it non-contiguous: reshape.
    masked = expand_block_mask(blocks, block, H, W).reshape(B, H * W, 1)
    return torch.where(masked, mask_token.to(x.dtype), x)


class SwinFamily(BackboneFamily):
    """Windowed attention over a fixed token grid.

    Token dropping would break the windows, so AugMask replaces masked
    patch tokens by one learnable mask token, right after patch embedding
    (before the absolute position embedding, where there is one). Masked
    positions come in square blocks of ``input_patch_size`` input pixels:
    at the usual patch size 4 and 32 px, 8 x 8 tokens, a 7 x 7 grid of
    blocks at 224 px and 12 x 12 at 384 px. No compute is saved.

    AugDrop acts on the attention projection dropout and the two MLP
    dropouts of every block; attention-probability dropout is untouched.
    AugPath can skip the dropped samples of both residual branches of every
    (V1) block.
    """

    name = 'Swin'
    masking = 'mask_token'
    # Exact classes: a subclass may change what follows the patch embedding.
    backbone_types = (SwinTransformer, SwinTransformerV2)

    @classmethod
    def matches(cls, backbone: nn.Module) -> bool:
        return type(backbone) in cls.backbone_types

    def check_masking(self, masking: str) -> None:
        if masking in ('mask_token', 'input'):
            return
        super().check_masking(masking)

    # -- AugMask: mask token -------------------------------------------
    def mask_token_dims(self) -> int:
        """Channels of the mask token: those of the patch embedding."""
        return self.backbone.embed_dims

    def mask_token_anchor(self) -> nn.Module:
        """The module whose learning rate the mask token shares: it sits at
        the depth of the patch embedding (layer 0 of layer-wise lr decay)."""
        return self.backbone.patch_embed

    def mask_block_tokens(self, block_pixels: int) -> int:
        """Side of a masking block in tokens; raises if ``block_pixels`` is
        not a whole number of patches."""
        stride = self.backbone.patch_embed.projection.stride
        if stride[0] != stride[1] or block_pixels % stride[0]:
            raise ValueError(
                f'AugMask input_patch_size={block_pixels} must be a multiple '
                f'of the patch size of {type(self.backbone).__name__} '
                f'({tuple(stride)}), so that masked blocks are whole tokens; '
                'the paper uses 32 with patch size 4.')
        return block_pixels // stride[0]

    def mask_token_hook(self, mask_token: nn.Parameter, ratio: float,
                        block_pixels: int) -> RemovableHandle:
        """Hook the patch embedding so that its output has ``ratio`` of its
        blocks of ``block_pixels`` pixels replaced by ``mask_token``."""
        block = self.mask_block_tokens(block_pixels)

        def hook(module, args, out):
            x, hw_shape = out
            return replace_masked_tokens(x, hw_shape, mask_token, ratio,
                                         block), hw_shape

        return self.backbone.patch_embed.register_forward_hook(hook)

    # -- AugDrop --------------------------------------------------------
    def dropout_layers(self) -> List[nn.Dropout]:
        stages = self.backbone.stages
        attn_probs = {id(m.attn_drop)
                      for m in iter_modules_of(stages, (WindowMSA,
                                                        WindowMSAV2))}
        return [m for m in iter_modules_of(stages, nn.Dropout)
                if id(m) not in attn_probs]

    # -- AugPath --------------------------------------------------------
    def residual_branches(self) -> List[Tuple[nn.Module, nn.Module, str]]:
        # A block is x + attn(norm1(x)), then ffn(norm2(x), identity=x); the
        # shifted-window attention ends with its drop-path (`drop`) and
        # treats samples independently (windows are cut per sample). Other
        # block types (SwinV2's post-norm blocks) keep the plain drop-path.
        branches = []
        for block in self.backbone.modules():
            if type(block) is not SwinBlock:
                continue
            if type(block.attn) is ShiftWindowMSA:
                branches.append((block.attn, block.attn, 'drop'))
            if type(block.ffn) is FFN and block.ffn.add_identity:
                branches.append((block.ffn.layers, block.ffn, 'dropout_layer'))
        return branches
