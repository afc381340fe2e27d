"""Swin family: mmpretrain's SwinTransformer and SwinTransformerV2."""
from typing import List, Tuple

import torch.nn as nn
from mmcv.cnn.bricks.transformer import FFN
from mmpretrain.models.backbones import SwinTransformer, SwinTransformerV2
from mmpretrain.models.backbones.swin_transformer import SwinBlock
from mmpretrain.models.utils import ShiftWindowMSA

from .grid import GridTokenFamily, replace_masked_tokens  # noqa: F401


class SwinFamily(GridTokenFamily):
    """Windowed attention over a fixed token grid.

    Token dropping would break the windows, so AugMask replaces masked
    patch tokens by one learnable mask token, right after patch embedding
    (before the absolute position embedding, where there is one). Masked
    positions come in square blocks of ``input_patch_size`` input pixels:
    at the usual patch size 4 and 32 px, 8 x 8 tokens, a 7 x 7 grid of
    blocks at 224 px and 12 x 12 at 384 px. No compute is saved.

    AugPath can skip the dropped samples of both residual branches of every
    (V1) block.
    """

    name = 'Swin'
    masking = 'mask_token'
    # Exact classes: a subclass may change what follows the patch embedding.
    backbone_types = (SwinTransformer, SwinTransformerV2)

    # -- AugMask: mask token -------------------------------------------
    def mask_block_tokens(self, block_pixels: int, stride=None) -> int:
        """Side of a masking block in tokens, from the patch projection's
        stride (checked at build time); raises if ``block_pixels`` is not a
        whole number of patches."""
        return super().mask_block_tokens(
            block_pixels, tuple(self.backbone.patch_embed.projection.stride))

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
