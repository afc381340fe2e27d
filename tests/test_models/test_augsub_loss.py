import pytest
import torch
import torch.nn.functional as F
from mmpretrain.models import CrossEntropyLoss, LabelSmoothLoss

from augsub_mm.models import AugSubLoss


def test_softmax_matches_mmpretrain_soft_cross_entropy():
    sub, main = torch.randn(6, 10), torch.randn(6, 10)
    ours = AugSubLoss('softmax', 1.0)(sub, main)
    ce = CrossEntropyLoss(use_soft=True)
    ref = ce(sub, main.softmax(-1), avg_factor=6)
    assert torch.allclose(ours, ref)


def test_sigmoid_matches_mmpretrain_bce_convention():
    sub, main = torch.randn(6, 10), torch.randn(6, 10)
    ours = AugSubLoss('sigmoid', 1.0)(sub, main)
    # mmpretrain's BCE: summed over classes, averaged over samples.
    ref = CrossEntropyLoss(use_sigmoid=True)(sub, main.sigmoid(),
                                            avg_factor=6)
    assert torch.allclose(ours, ref)
    assert torch.allclose(
        ours, F.binary_cross_entropy_with_logits(
            sub, main.sigmoid(), reduction='sum') / 6)


def test_zero_gradient_at_the_teacher_and_none_into_it():
    main = torch.randn(4, 7, requires_grad=True)
    sub = main.detach().clone().requires_grad_(True)
    loss = AugSubLoss('softmax', 1.0)(sub, main)
    loss.backward()
    assert main.grad is None
    # Soft CE of a distribution with itself is at its minimum.
    assert sub.grad.abs().max() < 1e-6


@pytest.mark.parametrize('head_loss,expected', [
    (CrossEntropyLoss(), 'softmax'),
    (CrossEntropyLoss(use_sigmoid=True), 'sigmoid'),
    (LabelSmoothLoss(0.1, mode='original'), 'softmax'),
    (LabelSmoothLoss(0.1, mode='multi_label', use_sigmoid=True), 'sigmoid'),
])
def test_soft_target_follows_the_head_loss(head_loss, expected):
    loss = AugSubLoss()
    loss.match_head_loss(head_loss)
    assert loss.soft_target == expected


def test_explicit_settings_win_and_weight_follows_head():
    loss = AugSubLoss(soft_target='sigmoid')
    loss.match_head_loss(CrossEntropyLoss(loss_weight=2.0))
    assert loss.soft_target == 'sigmoid' and loss.loss_weight == 2.0


def test_target_never_smoothed():
    # A label-smoothing head must not smooth the sub-model's target: the
    # loss equals plain soft CE against softmax(main).
    loss = AugSubLoss()
    loss.match_head_loss(LabelSmoothLoss(0.1, mode='original'))
    sub, main = torch.randn(3, 5), torch.randn(3, 5)
    ref = -(main.softmax(-1) * sub.log_softmax(-1)).sum(-1).mean()
    assert torch.allclose(loss(sub, main), ref)


def test_bad_soft_target():
    with pytest.raises(ValueError, match="choose from \\('softmax', "
                       "'sigmoid'\\)"):
        AugSubLoss('kl')
