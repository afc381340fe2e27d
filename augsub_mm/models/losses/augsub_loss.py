from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmpretrain.registry import MODELS

SOFT_TARGETS = ('softmax', 'sigmoid')


@MODELS.register_module()
class AugSubLoss(nn.Module):
    """Relaxed loss of the sub-model against the main model's prediction.

    From `Augmenting Sub-model to Improve Main Model
    <https://arxiv.org/abs/2306.11339>`_. The target is the main model's
    detached prediction, never label-smoothed:

    - ``'softmax'``: soft cross-entropy, ``-sum_c softmax(t)_c *
      log_softmax(s)_c``, for cross-entropy recipes;
    - ``'sigmoid'``: binary cross-entropy with logits against ``sigmoid(t)``,
      for BCE recipes (DeiT-III, ResNet RSB).

    Both are summed over classes and averaged over samples, the convention of
    mmpretrain's ``CrossEntropyLoss`` (with or without ``use_sigmoid``), so
    that the 1:1 weighting of main and sub loss means what the paper means.

    Args:
        soft_target (str, optional): ``'softmax'`` or ``'sigmoid'``. None
            means "match the head's loss", filled in by
            :class:`AugSubClassifier`. Defaults to None.
        loss_weight (float, optional): Multiplier of the loss, > 0. None
            means the head loss's ``loss_weight``. Defaults to None.

    Examples:
        >>> loss = AugSubLoss(soft_target='softmax', loss_weight=1.0)
        >>> teacher = torch.randn(4, 10)
        >>> float(loss(teacher, teacher)) > 0
        True
    """

    def __init__(self, soft_target: Optional[str] = None,
                 loss_weight: Optional[float] = None):
        super().__init__()
        if soft_target is not None and soft_target not in SOFT_TARGETS:
            raise ValueError(f'Unsupported soft_target {soft_target!r}, '
                             f'please choose from {SOFT_TARGETS}.')
        self.soft_target = soft_target
        if loss_weight is not None:
            check_loss_weight(loss_weight, 'sub_loss.loss_weight')
        self.loss_weight = loss_weight

    def match_head_loss(self, head_loss: nn.Module) -> None:
        """Fill what the config left open from the main loss module."""
        if self.soft_target is None:
            self.soft_target = 'sigmoid' if uses_sigmoid(head_loss) \
                else 'softmax'
        if self.loss_weight is None:
            self.loss_weight = check_loss_weight(
                getattr(head_loss, 'loss_weight', 1.0),
                f'the loss_weight of the head loss {type(head_loss).__name__}'
                ' (which sub_loss.loss_weight follows when unset)')

    def forward(self, sub_logits: torch.Tensor,
                main_logits: torch.Tensor) -> torch.Tensor:
        if self.soft_target is None or self.loss_weight is None:
            raise RuntimeError('AugSubLoss.soft_target / loss_weight unset: '
                               'call match_head_loss() or set them.')
        # The teacher is detached: no gradient reaches the main branch
        # through the sub loss.
        target = main_logits.detach().to(sub_logits.dtype)
        if self.soft_target == 'softmax':
            loss = -(target.softmax(dim=-1) *
                     sub_logits.log_softmax(dim=-1)).sum(dim=-1)
        else:
            loss = F.binary_cross_entropy_with_logits(
                sub_logits, target.sigmoid(), reduction='none').sum(dim=-1)
        return self.loss_weight * loss.mean()

    def extra_repr(self) -> str:
        return (f'soft_target={self.soft_target!r}, '
                f'loss_weight={self.loss_weight}')


def check_loss_weight(value, what: str) -> float:
    """``value`` as a float; raise unless it is a number > 0: at 0 the sub
    pass costs a forward and a backward and trains nothing, below 0 it
    pushes the sub-model away from the main model's prediction."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not value > 0:
        raise ValueError(
            f'AugSub needs {what} to be a number > 0, got {value!r}: at 0 the '
            'sub pass costs a full forward and backward and contributes '
            'nothing (a negative weight trains the sub-model away from the '
            "main model's prediction). Use ImageClassifier for a baseline "
            'run, or a weight > 0 (the paper: the loss weight of the main '
            'loss, 1.0).')
    return float(value)


def uses_sigmoid(loss_module: nn.Module) -> bool:
    """Whether a mmpretrain loss module is a sigmoid (BCE-family) loss."""
    if getattr(loss_module, 'use_sigmoid', False):
        return True
    inner = getattr(loss_module, 'ce', None)  # LabelSmoothLoss wraps a CE
    if inner is not None and getattr(inner, 'use_sigmoid', False):
        return True
    return type(loss_module).__name__ in ('FocalLoss', 'AsymmetricLoss')
