"""AugMask's default ``input_patch_size='auto'``: input masking keeps the
paper's grid (32 px patches on 224 px, 7 per side) at any input size, so
small-input recipes (CIFAR, MNIST) train instead of being refused."""
import logging
import uuid

import pytest
import torch
from mmengine.logging import MMLogger
from mmengine.optim import OptimWrapper
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

import augsub_mm  # noqa: F401
from augsub_mm.models import AugMask
from augsub_mm.models.utils.masking import auto_patch_size

RATIO = 0.5


@pytest.mark.parametrize('hw,patch', [
    ((224, 224), 32),  # the paper's ImageNet setting, unchanged
    ((384, 384), 55),  # 6 x 55 = 330 < 384 <= 385: 7 per side
    ((160, 160), 23),
    ((32, 32), 5),  # CIFAR: 6 full patches and one of 2 px per side
    ((28, 28), 4),  # MNIST: exactly 7 x 7
    ((224, 448), 32),  # the shorter side decides: 7 x 14
    ((448, 224), 32),
    ((3, 3), 1),
])
def test_auto_patch_size_table(hw, patch):
    assert auto_patch_size(*hw) == patch
    assert AugMask().input_patch(*hw) == patch


def test_auto_never_cuts_the_shorter_side_into_more_than_7():
    for side in range(1, 600):
        patch = auto_patch_size(side, 2 * side)
        per_side = -(-side // patch)
        assert per_side <= 7, side
        # 7 per side once the side holds 6 full patches and a bit more.
        if side >= 42:
            assert per_side == 7, side


@pytest.mark.parametrize('value', ['big', 0, -32, 32.0, True])
def test_input_patch_size_must_be_auto_or_positive_int(value):
    with pytest.raises(ValueError, match="positive int or 'auto'"):
        AugMask(input_patch_size=value)


def test_explicit_value_is_kept_at_any_size():
    assert AugMask(input_patch_size=32).input_patch(32, 32) == 32
    assert AugMask(input_patch_size=8).input_patch(384, 160) == 8


# -- a CIFAR-size ResNet trained with the defaults --------------------------
def cifar_resnet():
    torch.manual_seed(0)
    return MODELS.build(dict(
        type='AugSubClassifier',
        augsub=dict(type='AugMask', ratio=RATIO),  # input_patch_size: auto
        backbone=dict(type='ResNet_CIFAR', depth=18, stem_channels=8,
                      base_channels=8),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='LinearClsHead', num_classes=4, in_channels=64),
        # Mean 127.5 of uint8 pixels: no pixel normalises to exactly zero.
        data_preprocessor=dict(num_classes=4, mean=[127.5] * 3,
                               std=[127.5] * 3)))


def batch(size, n=3):
    g = torch.Generator().manual_seed(size)
    return dict(
        inputs=[torch.randint(0, 256, (3, size, size), generator=g,
                              dtype=torch.uint8) for _ in range(n)],
        data_samples=[DataSample().set_gt_label(i % 4) for i in range(n)])


class Inputs:
    """What the backbone receives in each forward (after AugMask's hook,
    which was registered first)."""

    def __init__(self, backbone):
        self.seen = []
        backbone.register_forward_pre_hook(
            lambda m, args: self.seen.append(args[0].detach().clone()))


class LogLines(logging.Handler):

    def __init__(self):
        super().__init__(logging.INFO)
        self.lines = []
        # A fresh current logger, whatever an earlier test left current.
        self.logger = MMLogger.get_instance(f'augmask-auto-{uuid.uuid4()}',
                                            log_level='INFO')
        self.logger.addHandler(self)

    def emit(self, record):
        if "input_patch_size='auto'" in record.getMessage():
            self.lines.append(record.getMessage())


def assert_masked_in_patches(clean, sub, patch):
    """``sub`` is ``clean`` with whole ``patch`` x ``patch`` patches (the
    last row and column cropped by the image border) set to zero, and
    exactly ``n - int(n * (1 - RATIO))`` of the ``n`` patches of each image
    zeroed; written without the plugin's mask code."""
    B, C, H, W = clean.shape
    assert (clean != 0).all()
    rows = [(y, min(y + patch, H)) for y in range(0, H, patch)]
    cols = [(x, min(x + patch, W)) for x in range(0, W, patch)]
    n = len(rows) * len(cols)
    for b in range(B):
        want = torch.ones(H, W)
        masked = 0
        for y0, y1 in rows:
            for x0, x1 in cols:
                if (sub[b, :, y0:y1, x0:x1] == 0).all():
                    want[y0:y1, x0:x1] = 0
                    masked += 1
        assert masked == n - int(n * (1 - RATIO)), (b, masked, n)
        assert torch.equal(sub[b], clean[b] * want), b


def test_cifar_resnet_trains_with_default_masking_in_5_px_patches():
    model = cifar_resnet()
    inputs = Inputs(model.backbone)
    log = LogLines()
    before = [p.detach().clone() for p in model.parameters()]
    optim = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1))

    losses = model.train_step(batch(32), optim)

    assert set(losses) >= {'loss', 'loss_sub'}
    assert all(torch.isfinite(v) for v in losses.values())
    assert any(not torch.equal(p, q)
               for p, q in zip(before, model.parameters()))
    clean, sub = inputs.seen  # main pass, then sub pass
    # ceil(32 / 7) = 5 px: a 7 x 7 grid, 49 - int(49 * 0.5) = 25 zeroed.
    assert_masked_in_patches(clean, sub, 5)
    assert len(log.lines) == 1
    assert '5 x 5 px patches on 32 x 32 inputs, a 7 x 7 grid' in log.lines[0]

    # Later steps at the same size: the same patches, nothing logged.
    for _ in range(2):
        inputs.seen.clear()
        model.train_step(batch(32), optim)
        assert_masked_in_patches(*inputs.seen, 5)
    assert len(log.lines) == 1


def test_new_training_size_is_resolved_again_and_logged_once():
    # Progressive resizing: the grid stays 7 on the shorter side at each
    # size; a size seen before is resolved again but not logged again.
    model = cifar_resnet()
    inputs = Inputs(model.backbone)
    log = LogLines()
    optim = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1))
    for size, patch in [(32, 5), (64, 10), (32, 5), (64, 10)]:
        inputs.seen.clear()
        model.train_step(batch(size), optim)
        assert_masked_in_patches(*inputs.seen, patch)
    assert [line.split(' inputs')[0].split(': ')[1] for line in log.lines] \
        == ['5 x 5 px patches on 32 x 32', '10 x 10 px patches on 64 x 64']
