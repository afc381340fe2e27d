"""EVA-02 family: mmpretrain's ViTEVA02.

Its attention rotates the queries and keys of the patch tokens by the
rotary embedding (RoPE) of their grid position; the class token is not
rotated. AugMask drops tokens and has the rotation use the kept tokens'
positions, per sample.
"""
from typing import List

import torch
from mmpretrain.models.backbones import ViTEVA02
from torch.utils.hooks import RemovableHandle

from .base import SubPassSwitch, SwitchedHook
from .vit import KeptTokens, PositionFamily


class KeptPositionRope:
    """The hooks of the rotary embedding in the sub pass.

    The embedding is elementwise per position: it multiplies the (B, heads,
    H * W, dims) queries or keys by the cosines and sines of the full grid.
    Before the call, the kept tokens (B, heads, K, dims) are put at their
    grid positions (zeros elsewhere); after it, the kept positions are taken
    back. Each kept token is rotated by exactly the values of its position,
    and the module's state is never touched.
    """

    def __init__(self, kept: KeptTokens):
        self.kept = kept

    def _index(self, x: torch.Tensor) -> torch.Tensor:
        return self.kept.indices[:, None, :, None].expand(
            -1, x.shape[1], -1, x.shape[3])

    def scatter(self, rope, args):
        x, hw = args
        h, w = hw
        full = x.new_zeros(x.shape[0], x.shape[1], h * w, x.shape[3])
        return full.scatter(2, self._index(x), x), hw

    def gather(self, rope, args, out):
        return out.gather(2, self._index(out))


class EVA02Family(PositionFamily):
    """EVA-02: token dropping with the rotary embedding at the kept tokens'
    positions (see :class:`KeptPositionRope`)."""

    name = 'EVA-02'
    backbone_types = (ViTEVA02, )

    def position_hooks(self, kept: KeptTokens,
                       switch: SubPassSwitch) -> List[RemovableHandle]:
        # One embedding module, shared by every layer's attention.
        rope = self.backbone.rope
        hooks = KeptPositionRope(kept)
        return [
            rope.register_forward_pre_hook(SwitchedHook(switch,
                                                        hooks.scatter)),
            rope.register_forward_hook(SwitchedHook(switch, hooks.gather))]
