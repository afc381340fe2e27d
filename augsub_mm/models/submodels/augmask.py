from contextlib import contextmanager
from typing import Iterator

import torch.nn as nn
from mmpretrain.registry import MODELS

from ..families import MASKINGS, BackboneFamily, get_family
from ..utils.masking import drop_tokens, mask_input_patches
from .base import BaseSubModel


@MODELS.register_module()
class AugMask(BaseSubModel):
    """Random masking sub-model (AugMask / MaskSub).

    From `Augmenting Sub-model to Improve Main Model
    <https://arxiv.org/abs/2306.11339>`_. The sub-model sees the same batch
    with ``ratio`` of it masked, drawn independently per sample:

    - ``'token_drop'`` (plain ViT, DeiT-III): ``int(L * (1 - ratio))`` patch
      tokens are kept after position embedding, prefix tokens always; the
      sub forward costs about ``1 - ratio`` of the main forward.
    - ``'input'`` (CNNs, or forced for any backbone): ``ratio`` of the
      ``input_patch_size`` x ``input_patch_size`` patches of the normalised
      image are set to zero.

    Which one a backbone gets is decided by its family adapter
    (:mod:`augsub_mm.models.families`).

    Args:
        ratio (float): Fraction masked, in [0, 1). Defaults to 0.5.
        masking (str): ``'auto'`` (the family's choice) or one of
            ``'token_drop'``, ``'mask_token'``, ``'input'``.
            Defaults to ``'auto'``.
        input_patch_size (int): Patch size of input masking, in pixels.
            Defaults to 32.

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

    def __init__(self, ratio: float = 0.5, masking: str = 'auto',
                 input_patch_size: int = 32, init_cfg=None):
        super().__init__(ratio, init_cfg=init_cfg)
        if masking != 'auto' and masking not in MASKINGS:
            raise ValueError(f'Unsupported AugMask masking {masking!r}, please '
                             f"choose from {('auto', ) + MASKINGS}.")
        if not isinstance(input_patch_size, int) or input_patch_size < 1:
            raise ValueError('AugMask input_patch_size must be a positive '
                             f'int, got {input_patch_size!r}.')
        self.masking = masking
        self.input_patch_size = input_patch_size

    def resolve(self, family: BackboneFamily) -> str:
        """The masking actually used for ``family``."""
        masking = family.masking if self.masking == 'auto' else self.masking
        family.check_masking(masking or 'auto')
        return masking

    def check(self, family: BackboneFamily) -> None:
        self.resolve(family)

    @contextmanager
    def engage(self, backbone: nn.Module) -> Iterator[None]:
        family = get_family(backbone)
        masking = self.resolve(family)
        ratio = self.ratio
        if masking == 'token_drop':
            site, prefix = family.token_drop_site()
            handle = site.register_forward_hook(
                lambda module, args, out: drop_tokens(out, ratio, prefix))
        elif masking == 'input':
            size = self.input_patch_size
            handle = backbone.register_forward_pre_hook(
                lambda module, args: (mask_input_patches(args[0], ratio, size),
                                      *args[1:]))
        else:
            handle = family.mask_token_hook(self.ratio)
        try:
            yield
        finally:
            handle.remove()

    def extra_repr(self) -> str:
        return f'ratio={self.ratio}, masking={self.masking!r}'
