"""Plain ViT family: mmpretrain's VisionTransformer, DeiT3 and DeiT."""
from typing import List, Tuple

import torch.nn as nn
from mmcv.cnn.bricks.transformer import FFN
from mmpretrain.models.backbones import (DeiT3, DistilledVisionTransformer,
                                         T2T_ViT, VisionTransformer)
from mmpretrain.models.backbones.deit3 import DeiT3FFN
from mmpretrain.models.selfsup.mocov3 import MoCoV3ViT
from mmpretrain.models.utils import MultiheadAttention

from .base import BackboneFamily

# Output types whose value is still exact when patch tokens are dropped:
# the class token, or the mean over the tokens that were kept.
TOKEN_DROP_OUT_TYPES = ('cls_token', 'avg_featmap')
# FFNs whose drop-path follows `layers` and a per-channel layer scale.
SKIPPABLE_FFN_TYPES = (FFN, DeiT3FFN)


class ViTFamily(BackboneFamily):
    """Token sequence after position embedding; prefix tokens always kept.

    AugMask drops patch tokens right after ``drop_after_pos``: every later
    layer works on any sequence length, and no compute is spent on the
    dropped tokens.
    """

    name = 'ViT'
    masking = 'token_drop'
    # Exact classes: a subclass (BEiT, EVA-02, ...) may add relative position
    # biases or rope that do not survive token dropping. These add the
    # position embedding to the tokens before `drop_after_pos`, and every
    # later layer is a function of the token set: T2T-ViT after its
    # tokens-to-token stem, MoCo v3's ViT (a fixed sin-cos position
    # embedding); RevViT's reversible layers too (revvit.py).
    backbone_types = (VisionTransformer, DeiT3, DistilledVisionTransformer,
                      MoCoV3ViT, T2T_ViT)
    # Those whose layers are mmpretrain's TransformerEncoderLayer (attn, ffn
    # with the drop-path slots that AugPath can skip work in).
    skippable_types = (VisionTransformer, DeiT3, DistilledVisionTransformer,
                       MoCoV3ViT)

    def check_masking(self, masking: str) -> None:
        if masking == 'input':
            return
        if masking != 'token_drop':
            super().check_masking(masking)
        out_type = self.backbone.out_type
        if out_type not in TOKEN_DROP_OUT_TYPES:
            raise ValueError(
                f"AugMask token dropping cannot form backbone.out_type="
                f"'{out_type}' from a subset of the tokens. Set "
                f'backbone.out_type to one of {TOKEN_DROP_OUT_TYPES}, or use '
                "AugMask(masking='input') to mask the input image instead.")

    def token_drop_site(self) -> Tuple[nn.Module, int]:
        # DeiT3 adds the class token after `drop_after_pos`; VisionTransformer
        # and DeiT before it.
        prefix = 0 if isinstance(self.backbone, DeiT3) else \
            self.backbone.num_extra_tokens
        if getattr(self.backbone, 'cls_token', None) is None:
            prefix = 0
        return self.backbone.drop_after_pos, prefix

    def residual_branches(self) -> List[Tuple[nn.Module, nn.Module, str]]:
        # An encoder layer is x + attn(norm(x)), then ffn(norm(x), identity=x).
        # attn ends with its drop-path (out_drop). Other attention / FFN
        # types keep the plain drop-path.
        branches = []
        if type(self.backbone) not in self.skippable_types:
            return branches
        for layer in self.backbone.layers:
            if type(layer.attn) is MultiheadAttention \
                    and not layer.attn.v_shortcut:
                branches.append((layer.attn, layer.attn, 'out_drop'))
            if type(layer.ffn) in SKIPPABLE_FFN_TYPES \
                    and layer.ffn.add_identity:
                branches.append((layer.ffn.layers, layer.ffn, 'dropout_layer'))
        return branches
