"""Conformer's two-score head (CNN and transformer branches; mmpretrain's
loss is the sum of the loss of each score): the AugSub step's gradient
equals a reference written here -- main loss = CE(conv) + CE(trans), sub
loss = the soft cross-entropy of each sub score against the same branch's
detached main softmax, summed; the sub-model applied by hand (input
patches zeroed from a mask drawn here, dropout / drop-path rates set
here); ONE autograd call on (main + sub) / 2."""
import copy
import math
from unittest.mock import patch

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn.bricks import DropPath
from mmengine.optim import OptimWrapper
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

import augsub_mm  # noqa: F401
from augsub_mm.models.utils import masking, sub_pass_seed
from test_exactness import tied_pair

RATIO, SIZE, CLASSES = 0.5, 64, 4
CFG = dict(
    type='ImageClassifier',
    backbone=dict(type='Conformer', arch=dict(
        embed_dims=32, depths=6, num_heads=2, channel_ratio=1),
        base_channels=8, drop_path_rate=0.1),
    neck=None,
    head=dict(type='ConformerHead', num_classes=CLASSES,
              in_channels=[32, 32]),
    data_preprocessor=dict(num_classes=CLASSES, mean=[127.5] * 3,
                           std=[127.5] * 3))


def batch(n=4):
    g = torch.Generator().manual_seed(5)
    return dict(
        inputs=[torch.randint(0, 256, (3, SIZE, SIZE), generator=g,
                              dtype=torch.uint8) for _ in range(n)],
        data_samples=[DataSample().set_gt_label(i % CLASSES)
                      for i in range(n)])


def augsub_step(kind):
    torch.manual_seed(0)
    model = MODELS.build(dict(CFG, type='AugSubClassifier',
                              augsub=dict(type=kind, ratio=RATIO)))
    model.train()
    plain = {k: v.clone() for k, v in model.state_dict().items()}
    optim = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1))
    grads, drawn = [], []
    step = optim.optimizer.step

    def record(*args, **kwargs):
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()
                      if p.grad is not None})
        return step(*args, **kwargs)

    def recorded_mask(*args, **kwargs):
        drawn.append(real_mask(*args, **kwargs))
        return drawn[-1]

    real_mask = masking.block_mask
    optim.optimizer.step = record
    with patch.object(masking, 'block_mask', recorded_mask):
        torch.manual_seed(7)
        log_vars = model.train_step(batch(), optim)
    return grads[0], plain, drawn, log_vars


def by_hand(net, kind):
    """The sub-model of ``kind`` on ``net`` (a copy sharing the weights)."""
    for parent in list(net.backbone.modules()):
        for name, child in list(parent.named_children()):
            if kind == 'AugDrop' and isinstance(child, nn.Dropout) and \
                    name != 'attn_drop':
                child.p = RATIO
            if kind == 'AugPath':
                if isinstance(child, DropPath):
                    child.drop_prob = RATIO
                elif name == 'drop_path' and isinstance(child, nn.Identity):
                    setattr(parent, name, DropPath(RATIO))


def zero_patches(x, own):
    """Zero 25 of the 7 x 7 patches of 10 px (ceil(64 / 7), the last row and
    column 4 px) per image, drawn from the stream."""
    b, _, h, w = x.shape
    side = math.ceil(SIZE / 7)
    n = 7 * 7
    ranks = torch.rand(b, n).argsort(1).argsort(1)
    masked = (ranks < n - int(n * (1 - RATIO))).view(b, 7, 7)
    own.append(masked)
    pixels = masked[:, torch.arange(h) // side][:, :, torch.arange(w) // side]
    return x * (~pixels)[:, None].float()


def soft_ce(score, teacher):
    return -(teacher.softmax(-1) * score.log_softmax(-1)).sum(-1).mean()


@pytest.mark.parametrize('kind', ['AugMask', 'AugDrop', 'AugPath'])
def test_conformer_gradient_equals_the_reference(kind):
    got, plain, drawn, log_vars = augsub_step(kind)
    main_net, sub_net, _ = tied_pair(copy.deepcopy(CFG), plain)
    by_hand(sub_net, kind)
    data = main_net.data_preprocessor(batch(), True)
    x = data['inputs']
    labels = torch.stack([s.gt_label for s in data['data_samples']])[:, 0]
    seed = sub_pass_seed(0)
    torch.manual_seed(7)
    main = main_net.head(main_net.extract_feat(x))
    main_loss = sum(F.cross_entropy(s, labels) for s in main)
    own = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        sub_x = zero_patches(x, own) if kind == 'AugMask' else x
        sub = sub_net.head(sub_net.extract_feat(sub_x))
    sub_loss = sum(soft_ce(s, m.detach()) for s, m in zip(sub, main))
    ((main_loss + sub_loss) / 2).backward()  # one autograd call
    assert len(own) == len(drawn)
    for mine, theirs in zip(own, drawn):
        assert torch.equal(mine, theirs)
    torch.testing.assert_close(log_vars['loss_sub'], sub_loss.detach())
    expected = {n: p.grad for n, p in main_net.named_parameters()
                if p.grad is not None}
    assert set(got) == set(expected)
    for name, grad in expected.items():
        torch.testing.assert_close(got[name], grad, rtol=1e-5, atol=1e-6,
                                   msg=name)
