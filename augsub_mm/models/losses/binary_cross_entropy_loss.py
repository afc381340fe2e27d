import torch
import torch.nn.functional as F
from mmpretrain.models.losses import CrossEntropyLoss
from mmpretrain.registry import MODELS


@MODELS.register_module()
class BinaryCrossEntropyLoss(CrossEntropyLoss):
    """Binary cross-entropy against binarised (Mixup/CutMix-ed) targets.

    The loss of DeiT III (`DeiT III: Revenge of the ViT
    <https://arxiv.org/abs/2204.07118>`_), used by the AugSub paper's
    DeiT-III recipe: after Mixup/CutMix, every class whose target score is
    above ``target_threshold`` becomes a positive (target 1), all others
    negatives (target 0), so both mixed classes count fully. Hard labels are
    one-hot encoded first. Reduction as ``CrossEntropyLoss(use_sigmoid=True)``
    (called by ``ClsHead``: summed over classes, averaged over samples), so
    that ``AugSubLoss`` matches it with a sigmoid soft target.

    Args:
        target_threshold (float): Target scores above it are positives.
            Defaults to 0., as in DeiT III.
        reduction (str): ``'none'``, ``'mean'`` or ``'sum'``.
            Defaults to ``'mean'``.
        loss_weight (float): Weight of the loss. Defaults to 1.0.
        class_weight (List[float], optional): Weight of each class.
            Defaults to None.
        pos_weight (List[float], optional): Positive weight of each class.
            Defaults to None.

    Examples:
        >>> loss = BinaryCrossEntropyLoss()
        >>> mixed = torch.tensor([[0.7, 0.3, 0.0]])
        >>> logits = torch.tensor([[9., 9., -9.]])
        >>> float(loss(logits, mixed)) < 1e-3  # both mixed classes positive
        True
    """

    def __init__(self,
                 target_threshold: float = 0.,
                 reduction: str = 'mean',
                 loss_weight: float = 1.0,
                 class_weight=None,
                 pos_weight=None):
        super().__init__(
            use_sigmoid=True,
            reduction=reduction,
            loss_weight=loss_weight,
            class_weight=class_weight,
            pos_weight=pos_weight)
        self.target_threshold = target_threshold

    def forward(self, cls_score: torch.Tensor, label: torch.Tensor,
                *args, **kwargs) -> torch.Tensor:
        if label.dim() == 1:
            label = F.one_hot(label, cls_score.size(-1))
        target = (label > self.target_threshold).to(cls_score.dtype)
        return super().forward(cls_score, target, *args, **kwargs)
