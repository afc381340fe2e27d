"""Plain ViT family: mmpretrain's VisionTransformer, DeiT3 and DeiT; and
the base of ViT relatives whose layers read the positions of the tokens."""
from typing import List, Optional, Tuple

import torch
import torch.nn as nn
from mmcv.cnn.bricks.transformer import FFN
from mmpretrain.models.backbones import (DeiT3, DistilledVisionTransformer,
                                         T2T_ViT, VisionTransformer)
from mmpretrain.models.backbones.deit3 import DeiT3FFN
from mmpretrain.models.selfsup.mocov3 import MoCoV3ViT
from mmpretrain.models.utils import MultiheadAttention

from ..utils import masking
from .base import BackboneFamily, SubPassSwitch, SwitchedHook
from .grid import GridTokenFamily

# Output types whose value is still exact when patch tokens are dropped:
# the class token, or the mean over the tokens that were kept.
TOKEN_DROP_OUT_TYPES = ('cls_token', 'avg_featmap')
# FFNs whose drop-path follows `layers` and a per-channel layer scale.
SKIPPABLE_FFN_TYPES = (FFN, DeiT3FFN)


class ViTFamily(GridTokenFamily):
    """Token sequence after position embedding; prefix tokens always kept.

    AugMask drops patch tokens right after ``drop_after_pos``: every later
    layer works on any sequence length, and no compute is spent on the
    dropped tokens. Where the output type needs every token (``'featmap'``,
    ``'raw'``), the default is a mask token after the patch embedding
    instead (as in :mod:`.grid`), and ``masking='mask_token'`` can be asked
    for always (where there is a ``patch_embed``).
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

    def has_mask_token_site(self) -> bool:
        """Whether a mask token can replace tokens after a patch embedding
        (T2T-ViT's tokens-to-token stem is no grid of patches)."""
        return hasattr(self.backbone, self.embed)

    @property
    def masking(self) -> str:
        return 'mask_token' if self.backbone.out_type not in \
            TOKEN_DROP_OUT_TYPES and self.has_mask_token_site() \
            else 'token_drop'

    def check_masking(self, masking: str) -> None:
        if masking == 'input' or (masking == 'mask_token'
                                  and self.has_mask_token_site()):
            return
        if masking != 'token_drop':
            BackboneFamily.check_masking(self, masking)
        self.check_out_type(
            "AugMask(masking='mask_token') (or 'auto') to replace masked "
            'tokens by a mask token instead' if self.has_mask_token_site()
            else "AugMask(masking='input') to mask the input image instead")

    def check_out_type(self, instead: str) -> None:
        """Raise unless ``backbone.out_type`` can be formed from the kept
        tokens; the message offers ``instead``."""
        out_type = self.backbone.out_type
        if isinstance(self.backbone, DeiT3) and out_type == 'avg_featmap':
            raise ValueError(
                "mmpretrain's DeiT3 cannot output out_type='avg_featmap', "
                'with or without AugSub: its forward then normalizes with '
                "self.ln2, which DeiT3 never builds (AttributeError: 'DeiT3' "
                "object has no attribute 'ln2'). Set backbone.out_type="
                "'cls_token' (the DeiT-III recipe), or 'featmap' (AugMask "
                'then uses a mask token).')
        if out_type not in TOKEN_DROP_OUT_TYPES:
            raise ValueError(
                f"AugMask token dropping cannot form backbone.out_type="
                f"'{out_type}' from a subset of the tokens. Set "
                f'backbone.out_type to one of {TOKEN_DROP_OUT_TYPES}, or use '
                f'{instead}.')

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


class KeptTokens:
    """The token-drop hook of the position families: drops tokens like
    :class:`ViTFamily` and keeps, for the layers of the same sub pass, the
    (B, K) grid positions of the patch tokens it kept (their order in the
    sequence after the prefix tokens)."""

    def __init__(self, ratio: float, prefix: int):
        self.ratio = ratio
        self.prefix = prefix
        self.indices: Optional[torch.Tensor] = None

    def drop(self, module, args, out):
        batch, length = out.shape[0], out.shape[1] - self.prefix
        keep = masking.num_kept(length, self.ratio)
        # With none kept, drop_tokens draws nothing and says what to change.
        self.indices = masking.random_keep_indices(
            batch, length, keep, out.device) if keep >= 1 else None
        return masking.drop_tokens(out, self.ratio, self.prefix,
                                   self.indices)


class PositionFamily(ViTFamily):
    """A ViT relative whose layers also read where each token is on the
    grid (relative position biases, rotary embeddings).

    AugMask drops tokens after the position embedding as for a plain ViT,
    and hooks the position-reading layers (:meth:`position_hooks`) so that,
    in the sub pass, they read the positions of the kept tokens: the
    network is the same function of the kept tokens as of a full grid.
    Outputs that need every token get the mask token, as in a plain ViT.
    """

    def token_drop_hooks(self, ratio: float, switch: SubPassSwitch):
        site, prefix = self.token_drop_site()
        kept = KeptTokens(ratio, prefix)
        handles = [site.register_forward_hook(SwitchedHook(switch,
                                                           kept.drop))]
        return handles + self.position_hooks(kept, switch), site

    def position_hooks(self, kept: KeptTokens,
                       switch: SubPassSwitch) -> list:
        """Register the hooks that make the position-reading layers use
        ``kept.indices`` while ``switch`` is on; return their handles."""
        raise NotImplementedError
