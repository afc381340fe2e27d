from typing import List, Tuple, Union

import torch.nn as nn
from mmcv.cnn.bricks import DropPath
from mmpretrain.registry import MODELS
from torch.utils.hooks import RemovableHandle

from ..families import BackboneFamily, get_family
from ..families.base import drop_path_types
from ..utils.drop_path import MIN_SAVED_WORK, SkippingDropPath
from .base import BaseSubModel, unwrap_compiled

SKIP_MODES = ('auto', True, False)


@MODELS.register_module()
class AugPath(BaseSubModel):
    """Drop-path sub-model (AugPath / PathSub).

    From `Augmenting Sub-model to Improve Main Model
    <https://arxiv.org/abs/2306.11339>`_. The sub forward runs with every
    residual branch's drop-path probability set to ``ratio``, uniform over
    depth; the recipe's (usually increasing) values are restored afterwards.
    Blocks built with a drop rate of 0 hold an ``nn.Identity``: it is swapped
    for a parameter-free ``DropPath`` for the sub pass only, so the state
    dict never changes.

    A plain drop-path computes a branch for the whole batch and then zeroes
    the dropped samples: the sub pass costs a full forward and backward.
    Where the backbone's family exposes its residual branches
    (:meth:`BackboneFamily.residual_branches`, e.g. ViT / DeiT-III), each
    branch instead runs on the samples it keeps only
    (:func:`~augsub_mm.models.utils.drop_path.skipping_drop_path`): the same
    function, about ``1 - ratio`` of the branch work.

    Args:
        ratio (float): Drop-path probability in the sub pass, in (0, 1).
            Defaults to 0.5.
        skip (bool | str): Whether to skip the work of dropped samples.
            ``'auto'``: in the branches the family exposes, for each call
            whose saved work is worth the gather / scatter (see
            :data:`~augsub_mm.models.utils.drop_path.MIN_SAVED_WORK`);
            ``True``: in every call of those branches, and an error at build
            time if the family exposes none; ``False``: never (the naive
            cost, a full extra forward and backward). Defaults to
            ``'auto'``.

    Examples:
        >>> import torch
        >>> from mmpretrain.models import VisionTransformer
        >>> vit = VisionTransformer(dict(embed_dims=32, num_layers=2,
        ...     num_heads=2, feedforward_channels=64), img_size=32,
        ...     patch_size=8)
        >>> augpath = AugPath(ratio=0.5)
        >>> augpath.bind(vit)
        >>> with augpath.engage(vit):
        ...     print(vit(torch.rand(4, 3, 32, 32))[0].shape)
        torch.Size([4, 32])
    """

    def __init__(self, ratio: float = 0.5, skip: Union[bool, str] = 'auto',
                 init_cfg=None):
        super().__init__(ratio, init_cfg=init_cfg)
        if not (skip == 'auto' or isinstance(skip, bool)):
            raise ValueError(f'Unsupported AugPath skip {skip!r}, please '
                             f'choose from {SKIP_MODES}.')
        self.skip = skip

    def check(self, family: BackboneFamily) -> None:
        family.drop_path_sites()
        if self.skip is True and not family.residual_branches():
            raise ValueError(
                f'AugPath(skip=True) needs the residual branches of '
                f'{type(family.backbone).__name__}, and its adapter '
                f'({family.name} family) exposes none. Use skip=\'auto\' or '
                'skip=False: the sub pass then computes dropped samples too.')

    def register_hooks(self,
                       family: BackboneFamily) -> List[RemovableHandle]:
        # What the sub pass puts in each drop-path slot, made once (a module
        # made per step would be a new object for torch.compile each time).
        branches = family.residual_branches() if self.skip else []
        skipped = {(id(parent), name) for _, parent, name in branches}
        self._slots, acting = [], [branch for branch, _, _ in branches]
        # The slots as bound: while the sub pass is engaged, skipped slots
        # hold an nn.Identity that a new scan would not take for a slot.
        self._sites = family.drop_path_sites()
        types = drop_path_types()
        for parent, name in self._sites:
            slot = getattr(parent, name)
            if (id(parent), name) in skipped:
                # The branch's hooks apply the drop-path.
                self._slots.append((parent, name, nn.Identity()))
            elif isinstance(slot, types):
                # mmcv's and timm's both read drop_prob at every call.
                self._slots.append((slot, 'drop_prob', self.ratio))
                acting.append(slot)
            else:
                drop = DropPath(self.ratio)
                self._slots.append((parent, name, drop))
                acting.append(drop)
        skipping = SkippingDropPath(
            self.ratio, 0 if self.skip is True else MIN_SAVED_WORK,
            self.switch)
        handles = [h for branch, _, _ in branches
                   for h in skipping.install(branch)]
        return handles + self.count_calls(acting)

    def overrides(self, family: BackboneFamily
                  ) -> List[Tuple[object, str, object]]:
        changes = []
        for parent, name, value in self._slots:
            if isinstance(value, DropPath):
                # In the slot's mode: a block in eval mode (frozen stage)
                # is not dropped, in the sub pass as in the main pass.
                changes.append((value, 'training',
                                getattr(parent, name).training))
            changes.append((parent, name, value))
        return changes

    def describe(self, backbone: nn.Module) -> str:
        family = get_family(unwrap_compiled(backbone))
        slots = len(family.drop_path_sites())
        skipped = len(family.residual_branches()) if self.skip else 0
        return f'drop-path ({slots} slots' + (
            f', {skipped} skipping work)' if skipped else ')')

    def inactive_reason(self, backbone: nn.Module) -> str:
        self.bind(backbone)
        parents = [parent for parent, _ in self._sites]
        if not any(p.training for p in parents):
            return ('its drop-path slots are all in blocks in eval mode '
                    '(a frozen backbone, e.g. a linear-probe config).')
        blocks = sorted({type(p).__name__ for p in parents if p.training})
        return (f'no forward called its drop-path slots: the blocks '
                f'({", ".join(blocks)}) build a drop-path module but their '
                'forward never uses it.')

    def extra_repr(self) -> str:
        return f'ratio={self.ratio}, skip={self.skip!r}'
