"""BCE on binarised Mixup/CutMix targets (DeiT III), and its pairing with
the sub-model's sigmoid soft target."""
import torch
import torch.nn.functional as F
from mmpretrain.models.losses import CrossEntropyLoss
from mmpretrain.registry import MODELS

from augsub_mm.models import AugSubLoss, BinaryCrossEntropyLoss


def test_mixed_classes_become_positives():
    loss = MODELS.build(dict(type='BinaryCrossEntropyLoss'))
    logits = torch.randn(3, 5)
    mixed = torch.tensor([[0.7, 0.3, 0., 0., 0.],
                          [0., 0., 1., 0., 0.],
                          [0., 0.1, 0., 0., 0.9]])
    binary = (mixed > 0).float()
    # As ClsHead calls it: summed over classes, averaged over samples.
    want = F.binary_cross_entropy_with_logits(
        logits, binary, reduction='none').sum(1).mean()
    torch.testing.assert_close(loss(logits, mixed, avg_factor=3), want)
    bce = CrossEntropyLoss(use_sigmoid=True)
    torch.testing.assert_close(loss(logits, mixed), bce(logits, binary))
    assert not torch.allclose(loss(logits, mixed), bce(logits, mixed))


def test_threshold_and_hard_labels():
    loss = BinaryCrossEntropyLoss(target_threshold=0.2)
    logits = torch.randn(2, 3)
    mixed = torch.tensor([[0.85, 0.15, 0.], [0., 0.5, 0.5]])
    binary = torch.tensor([[1., 0., 0.], [0., 1., 1.]])
    bce = CrossEntropyLoss(use_sigmoid=True)
    torch.testing.assert_close(loss(logits, mixed), bce(logits, binary))
    hard = torch.tensor([0, 2])
    torch.testing.assert_close(
        loss(logits, hard), bce(logits, F.one_hot(hard, 3).float()))


def test_sub_model_loss_matches_it_with_a_sigmoid_target():
    sub_loss = AugSubLoss()
    sub_loss.match_head_loss(BinaryCrossEntropyLoss(loss_weight=2.))
    assert sub_loss.soft_target == 'sigmoid' and sub_loss.loss_weight == 2.
