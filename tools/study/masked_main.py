"""Plain masked training: the control of the study's claim (3).

The paper (`Augmenting Sub-model to Improve Main Model
<https://arxiv.org/abs/2306.11339>`_) argues that heavy masking hurts when
it is part of the training recipe itself, and helps when it only drives a
sub-model. To test that, the study needs a run that masks the main (and
only) forward pass with exactly the masking that AugMask gives its sub
forward. :class:`MaskedMainClassifier` does that with AugMask's public
``engage``; it is a study tool, not part of ``augsub_mm``.
"""
from typing import List, Union

import torch
from mmpretrain.models import ImageClassifier
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

from augsub_mm.models.submodels import AugMask


@MODELS.register_module()
class MaskedMainClassifier(ImageClassifier):
    """Image classifier whose training forward is masked by AugMask.

    Every training loss is computed on the masked batch (token dropping for
    ViTs, input masking for CNNs, as AugMask decides for the backbone);
    validation, test and inference see the whole image.

    Args:
        backbone (dict): As :class:`ImageClassifier`.
        mask (dict | AugMask): The masking, e.g.
            ``dict(type='AugMask', ratio=0.75)``.
        **kwargs: The other arguments of :class:`ImageClassifier`.

    Examples:
        >>> import torch
        >>> model = MODELS.build(dict(
        ...     type='MaskedMainClassifier',
        ...     mask=dict(type='AugMask', ratio=0.75),
        ...     backbone=dict(type='VisionTransformer', arch=dict(
        ...         embed_dims=32, num_layers=2, num_heads=2,
        ...         feedforward_channels=64), img_size=32, patch_size=8),
        ...     head=dict(type='VisionTransformerClsHead', num_classes=10,
        ...               in_channels=32)))
        >>> model(torch.rand(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """

    def __init__(self, backbone: dict, mask: Union[dict, AugMask],
                 **kwargs):
        super().__init__(backbone, **kwargs)
        if isinstance(mask, dict):
            mask = MODELS.build(mask)
        if not isinstance(mask, AugMask):
            raise TypeError('MaskedMainClassifier masks with AugMask: '
                            f"use mask=dict(type='AugMask', ratio=...), got "
                            f'{type(mask).__name__}.')
        mask.bind(self.backbone)
        self.mask = mask

    def loss(self, inputs: torch.Tensor,
             data_samples: List[DataSample]) -> dict:
        with self.mask.engage(self.backbone):
            return super().loss(inputs, data_samples)
