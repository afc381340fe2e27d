import math
import weakref
from contextlib import contextmanager
from typing import Iterator, List, Tuple, Union

import torch
import torch.nn as nn
from mmengine.logging import print_log
from mmengine.model.weight_init import trunc_normal_
from mmpretrain.registry import MODELS
from torch.optim import Optimizer
from torch.optim.optimizer import register_optimizer_step_pre_hook
from torch.utils.hooks import RemovableHandle

from ..families import MASKINGS, BackboneFamily, SwitchedHook, get_family
from ..utils.masking import AUTO_GRID, auto_patch_size, mask_input_patches
from .base import BaseSubModel, unwrap_compiled

#: How the coverage matrix names each form of masking.
MASKING_NAMES = dict(token_drop='token drop', mask_token='mask token',
                     input='input masking')


@MODELS.register_module()
class AugMask(BaseSubModel):
    """Random masking sub-model (AugMask / MaskSub).

    From `Augmenting Sub-model to Improve Main Model
    <https://arxiv.org/abs/2306.11339>`_. The sub-model sees the same batch
    with ``ratio`` of it masked, drawn independently per sample:

    - ``'token_drop'`` (plain ViT, DeiT-III): ``int(L * (1 - ratio))`` patch
      tokens are kept after position embedding, prefix tokens always; the
      sub forward costs about ``1 - ratio`` of the main forward.
    - ``'mask_token'`` (Swin): ``ratio`` of the blocks of
      ``input_patch_size`` x ``input_patch_size`` pixels are replaced, after
      patch embedding, by one learnable mask token (``self.mask_token``,
      shape (C, ), trunc-normal std 0.02). It must not be weight-decayed.
      Being 1-D, it is covered by a recipe's ``flat_decay_mult=0.0`` (every
      mmpretrain Swin recipe sets it), so any launcher's optimizer does
      that; ``AugSubOptimWrapperConstructor`` does it for any recipe. The
      first optimizer step that would update it with weight decay raises
      instead (see :meth:`check_optimizer`).
    - ``'input'`` (CNNs, or forced for any backbone): ``ratio`` of the
      ``input_patch_size`` x ``input_patch_size`` patches of the normalised
      image are set to zero.

    Which one a backbone gets is decided by its family adapter
    (:mod:`augsub_mm.models.families`).

    ``input_patch_size='auto'`` (the default) keeps the paper's proportion
    for input masking, 32 px patches on 224 px: the patch side is
    ``ceil(min(H, W) / 7)`` px of the input the sub pass receives, so the
    shorter side is cut into at most 7 patches, the longer one into as many
    as it holds, and a side that is not a multiple ends in a partial patch
    that counts like a full one (224 px: 32, a 7 x 7 grid; 384: 55; 160:
    23; 32 (CIFAR): 5, 7 x 7 with a last row and column of 2 px; 28: 4;
    224 x 448: 32, 7 x 14). It is resolved at the first sub pass, said once
    in the log, and again for each new input size (progressive resizing:
    the grid stays 7 on the shorter side; an input size seen before is
    not logged again). Mask-token masking under ``'auto'`` masks blocks of
    the whole number of tokens nearest to 32 px (8 x 8 at Swin's patch size
    4, 2 x 2 at 16; 2 x 2 at 14, i.e. 28 px). An int is used as
    given at every size, and refused at the first step where it leaves no
    block unmasked.

    Args:
        ratio (float): Fraction masked, in (0, 1). Defaults to 0.5.
        masking (str): ``'auto'`` (the family's choice) or one of
            ``'token_drop'``, ``'mask_token'``, ``'input'``.
            Defaults to ``'auto'``.
        input_patch_size (int | str): Side of a masked patch (input
            masking) or block (mask token), in input pixels, or ``'auto'``
            (see above). Defaults to ``'auto'``.

    Examples:
        >>> import torch
        >>> from mmpretrain.models import VisionTransformer
        >>> vit = VisionTransformer(dict(embed_dims=32, num_layers=2,
        ...     num_heads=2, feedforward_channels=64), img_size=32,
        ...     patch_size=4)
        >>> augmask = AugMask(ratio=0.5)
        >>> augmask.bind(vit)
        >>> with augmask.engage(vit):
        ...     print(vit(torch.rand(2, 3, 32, 32))[0].shape)
        torch.Size([2, 32])
    """

    acts_in_eval = True

    def __init__(self, ratio: float = 0.5, masking: str = 'auto',
                 input_patch_size: Union[int, str] = 'auto',
                 init_cfg=None):
        super().__init__(ratio, init_cfg=init_cfg)
        if masking != 'auto' and masking not in MASKINGS:
            raise ValueError(f'Unsupported AugMask masking {masking!r}, please '
                             f"choose from {('auto', ) + MASKINGS}.")
        if input_patch_size != 'auto' and (
                isinstance(input_patch_size, bool)
                or not isinstance(input_patch_size, int)
                or input_patch_size < 1):
            raise ValueError('AugMask input_patch_size must be a positive '
                             f"int or 'auto', got {input_patch_size!r}.")
        self.masking = masking
        self.input_patch_size = input_patch_size
        # 'auto': the input size last resolved for and its patch side (read
        # at every sub pass: constants for torch.compile while the size
        # stays), and the sizes already logged.
        self._auto_hw = None
        self._auto_patch = None
        self._auto_logged = set()
        # Created by `bind` for backbones masked with a token.
        self.register_parameter('mask_token', None)
        self._optimizer_checked = False

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Checkpoints of augsub_mm <= 0.1 hold the token as (1, 1, C).
        key = prefix + 'mask_token'
        token = state_dict.get(key)
        if token is not None and self.mask_token is not None and \
                token.dim() == 3 and token.shape[:2] == (1, 1):
            state_dict[key] = token.reshape(-1)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def resolve(self, family: BackboneFamily) -> str:
        """The masking actually used for ``family``."""
        masking = family.masking if self.masking == 'auto' else self.masking
        family.check_masking(masking or 'auto')
        return masking

    def check(self, family: BackboneFamily) -> None:
        if self.resolve(family) == 'mask_token':
            family.mask_block_tokens(self.input_patch_size)

    def bind(self, backbone: nn.Module) -> None:
        super().bind(backbone)
        family = self._family
        if self.resolve(family) == 'mask_token' and self.mask_token is None:
            # 1-D, so that the recipes' flat_decay_mult=0.0 covers it.
            self.mask_token = nn.Parameter(
                torch.zeros(family.mask_token_dims()))
            trunc_normal_(self.mask_token, std=.02)

    # -- optimizer placement of the mask token --------------------------
    def param_group_anchors(
            self, backbone: nn.Module) -> List[Tuple[nn.Parameter, nn.Module]]:
        """Parameters of this sub-model that must not be weight-decayed,
        each with the backbone module whose learning rate (layer-wise decay
        included) it shares. Read by ``AugSubOptimWrapperConstructor``."""
        if self.mask_token is None:
            return []
        return [(self.mask_token, get_family(
            unwrap_compiled(backbone)).mask_token_anchor())]

    def check_optimizer(self, optimizer: Optimizer) -> None:
        """Check that the mask token is in a parameter group with
        ``weight_decay=0``.

        Called by ``AugSubOptimWrapperConstructor`` when it builds the
        optimizer; otherwise, automatically before the first step of the
        optimizer that holds the token (so it works under any launcher,
        e.g. mmpretrain's own ``tools/train.py``): a recipe that would decay
        the token stops there, before anything is updated.

        Raises:
            ValueError: If the token is in no group, in several, or in one
                with a non-zero weight decay.
        """
        if self.mask_token is None:
            return
        groups = [g for g in optimizer.param_groups
                  if any(p is self.mask_token for p in g['params'])]
        if len(groups) != 1 or groups[0].get('weight_decay', 0) != 0:
            found = [g.get('weight_decay', 0) for g in groups]
            raise ValueError(
                'AugMask\'s mask token must be in exactly one parameter '
                'group, with weight_decay=0 (the paper excludes it from '
                f'weight decay); found it in groups with weight_decay {found}.'
                ' The token is 1-D: a recipe with paramwise_cfg=dict('
                'flat_decay_mult=0.0) (all of mmpretrain\'s Swin recipes) '
                'covers it; for any other recipe set optim_wrapper = dict('
                "constructor='AugSubOptimWrapperConstructor') (the recipe's "
                'own constructor, if any, goes to base_constructor).')
        self._optimizer_checked = True
        _AWAITING_CHECK.discard(self)

    def _check_before_first_step(self) -> None:
        """Have :meth:`check_optimizer` run before the first step of
        whichever optimizer holds the mask token."""
        global _STEP_HOOK
        _AWAITING_CHECK.add(self)
        if _STEP_HOOK is None:
            _STEP_HOOK = register_optimizer_step_pre_hook(_check_before_step)

    def register_hooks(self,
                       family: BackboneFamily) -> List[RemovableHandle]:
        masking = self.resolve(family)
        if masking == 'token_drop':
            handles, site = family.token_drop_hooks(self.ratio, self.switch)
        elif masking == 'input':
            site = family.backbone
            handles = [site.register_forward_pre_hook(
                SwitchedHook(self.switch, self._mask_input))]
        else:
            handles, site = family.mask_token_hooks(
                self, self.ratio, self.input_patch_size, self.switch)
        return handles + self.count_calls([site])

    def input_patch(self, height: int, width: int) -> int:
        """Patch side of input masking on a ``height`` x ``width`` input."""
        if self.input_patch_size != 'auto':
            return self.input_patch_size
        if (height, width) != self._auto_hw:
            self._resolve_auto(height, width)
        return self._auto_patch

    @torch.compiler.disable
    def _resolve_auto(self, height: int, width: int) -> None:
        # Kept out of compiled graphs: it logs, and it runs only when the
        # input size changes (a recompilation then anyway).
        height, width = int(height), int(width)
        patch = auto_patch_size(height, width)
        self._auto_hw, self._auto_patch = (height, width), patch
        if (height, width) in self._auto_logged:
            return
        self._auto_logged.add((height, width))
        print_log(
            f"AugMask input_patch_size='auto': {patch} x {patch} px patches "
            f'on {height} x {width} inputs, a {math.ceil(height / patch)} x '
            f'{math.ceil(width / patch)} grid (the paper\'s 32 px on 224 px: '
            f'ceil(min(H, W) / {AUTO_GRID})).', logger='current')

    def _mask_input(self, module, args):
        x = args[0]
        patch = self.input_patch(*x.shape[-2:])
        return (mask_input_patches(x, self.ratio, patch), *args[1:])

    @contextmanager
    def engage(self, backbone: nn.Module) -> Iterator[None]:
        self.family(backbone)
        if self.mask_token is not None and self.mask_token.requires_grad \
                and torch.is_grad_enabled() and not self._optimizer_checked:
            self._check_before_first_step()
        with super().engage(backbone):
            yield

    def describe(self, backbone: nn.Module) -> str:
        return MASKING_NAMES[self.resolve(
            get_family(unwrap_compiled(backbone)))]

    def inactive_reason(self, backbone: nn.Module) -> str:
        family = get_family(unwrap_compiled(backbone))
        return (f'the module it masks at ({self.resolve(family)}) was '
                'never called.')

    def extra_repr(self) -> str:
        return (f'ratio={self.ratio}, masking={self.masking!r}, '
                f'input_patch_size={self.input_patch_size!r}')


# AugMask instances whose mask token trains and has not been checked against
# an optimizer yet, and the one global step pre-hook that checks them: the
# model cannot see the optimizer a launcher builds, but every optimizer step
# passes through torch's global hooks, before any parameter changes.
_AWAITING_CHECK: 'weakref.WeakSet[AugMask]' = weakref.WeakSet()
_STEP_HOOK = None


def _check_before_step(optimizer: Optimizer, args, kwargs) -> None:
    global _STEP_HOOK
    for augmask in list(_AWAITING_CHECK):
        token = augmask.mask_token
        if token is None:
            _AWAITING_CHECK.discard(augmask)
        elif any(p is token for g in optimizer.param_groups
                 for p in g['params']):
            augmask.check_optimizer(optimizer)
    if not _AWAITING_CHECK and _STEP_HOOK is not None:
        _STEP_HOOK.remove()
        _STEP_HOOK = None
