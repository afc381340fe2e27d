from typing import Sequence

from mmcv.transforms import RandomChoice
from mmpretrain.datasets.transforms import (GaussianBlur, RandomGrayscale,
                                            Solarize)
from mmpretrain.registry import TRANSFORMS

# ITU-R 601 luma weights in the BGR channel order of mmpretrain's images:
# the grey of PIL's convert('L') and of torchvision's Grayscale.
BGR_LUMA = (0.114, 0.587, 0.299)


@TRANSFORMS.register_module()
class ThreeAugment(RandomChoice):
    """Apply one of grayscale, solarization or Gaussian blur, uniformly.

    The "3-Augment" of `DeiT III: Revenge of the ViT
    <https://arxiv.org/abs/2204.07118>`_, used by the DeiT-III recipe of
    `Augmenting Sub-model to Improve Main Model
    <https://arxiv.org/abs/2306.11339>`_. Each image gets exactly one of:

    - grayscale (luma, kept as 3 channels),
    - solarization (pixels at or above ``solarize_thr`` inverted),
    - Gaussian blur with a radius drawn uniformly in ``blur_radius``.

    It goes after the crop and flip; DeiT III follows it with a colour
    jitter of 0.3 (``dict(type='ColorJitter', brightness=0.3,
    contrast=0.3, saturation=0.3)``).

    **Required Keys:** img. **Modified Keys:** img.

    Args:
        solarize_thr (float): Solarization threshold. Defaults to 128.
        blur_radius (Sequence[float]): Range of the blur radius (the
            Gaussian's standard deviation, in pixels). Defaults to
            ``(0.1, 2.0)``.

    Examples:
        >>> import numpy as np
        >>> t = ThreeAugment()
        >>> out = t(dict(img=np.full((8, 8, 3), 200, dtype=np.uint8)))
        >>> out['img'].shape, out['img'].dtype
        ((8, 8, 3), dtype('uint8'))
    """

    def __init__(self, solarize_thr: float = 128,
                 blur_radius: Sequence[float] = (0.1, 2.0)):
        if len(blur_radius) != 2 or not 0 <= blur_radius[0] <= \
                blur_radius[1]:
            raise ValueError('ThreeAugment blur_radius must be a range '
                             f'(min, max) with 0 <= min <= max, got '
                             f'{blur_radius!r}.')
        self.solarize_thr = solarize_thr
        self.blur_radius = tuple(blur_radius)
        super().__init__(transforms=[
            [RandomGrayscale(prob=1., keep_channels=True,
                             channel_weights=BGR_LUMA)],
            [Solarize(thr=solarize_thr, prob=1.)],
            # magnitude_std='inf' draws the level uniformly in
            # [0, total_level], mapped linearly onto the radius range.
            [GaussianBlur(magnitude_range=self.blur_radius,
                          magnitude_std='inf', prob=1.)],
        ])

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(solarize_thr={self.solarize_thr}, '
                f'blur_radius={self.blur_radius})')
