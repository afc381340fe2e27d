"""BEiT family: mmpretrain's BEiTViT.

Its attention adds a relative position bias, indexed by the positions of
each pair of tokens (class token included), from a table of the layer's own
or one shared by the backbone. AugMask drops tokens and gives each layer the
bias of the kept tokens' pairs, per sample: (B, heads, K + 1, K + 1).
"""
from typing import List

import torch
import torch.nn as nn
from mmpretrain.models.backbones import BEiTViT
from mmpretrain.models.utils import BEiTAttention
from torch.utils.hooks import RemovableHandle

from .base import SubPassSwitch
from .vit import KeptTokens, PositionFamily


class KeptPairBias:
    """The hooks of a ``BEiTAttention`` in the sub pass: the bias of the
    kept tokens' pairs.

    The attention adds its own table's bias for the full grid
    (``relative_position_bias_table``, a (N + 1) x (N + 1) index), and any
    shared bias passed as ``rel_pos_bias``. Before the call, both are
    gathered at the kept positions of each sample and passed (summed) as
    ``rel_pos_bias``, and the layer's table is set aside, to be put back
    right after the call (also when it raises); the gradient reaches the
    table through the gather. Setting it aside is the one way to skip the
    attention's full-grid bias: a per-sample bias can only come in through
    ``rel_pos_bias``.
    """

    def __init__(self, kept: KeptTokens, switch: SubPassSwitch):
        self.kept = kept
        self.switch = switch
        self.table = None

    def before(self, attn: nn.Module, args, kwargs):
        if not self.switch.on:
            return None
        keep = self.kept.indices
        # Row / column 0 of the index is the class token; patches follow.
        pos = torch.cat([keep.new_zeros(keep.shape[0], 1), keep + 1], dim=1)
        rows, cols = pos[:, :, None], pos[:, None, :]
        bias = kwargs.get('rel_pos_bias')
        if bias is not None:
            # (heads, N + 1, N + 1) -> (B, heads, K + 1, K + 1)
            bias = bias.permute(1, 2, 0)[rows, cols].permute(0, 3, 1, 2)
        if attn.relative_position_bias_table is not None:
            self.table = attn.relative_position_bias_table
            index = attn.relative_position_index[rows, cols]
            own = self.table[index].permute(0, 3, 1, 2)
            bias = own if bias is None else own + bias
            attn.relative_position_bias_table = None
        return args, dict(kwargs, rel_pos_bias=bias)

    def after(self, attn: nn.Module, args, out):
        if self.table is not None:
            attn.relative_position_bias_table = self.table
            self.table = None


class BEiTFamily(PositionFamily):
    """BEiT: token dropping with the relative position bias of the kept
    tokens (see :class:`KeptPairBias`)."""

    name = 'BEiT'
    backbone_types = (BEiTViT, )

    def position_hooks(self, kept: KeptTokens,
                       switch: SubPassSwitch) -> List[RemovableHandle]:
        handles = []
        for attn in self.backbone.modules():
            if isinstance(attn, BEiTAttention):
                hooks = KeptPairBias(kept, switch)
                handles += [
                    attn.register_forward_pre_hook(hooks.before,
                                                   with_kwargs=True),
                    attn.register_forward_hook(hooks.after,
                                               always_call=True)]
        return handles
