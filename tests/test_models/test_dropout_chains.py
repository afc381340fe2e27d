"""AugDrop drives one dropout per path: where a block applies two dropout
modules in series (mmpretrain's ``out_drop(gamma1(proj_drop(x)))`` with an
``nn.Dropout`` as ``out_drop``: RevViT, EdgeNeXt), the sub pass drops
``ratio`` of the attention output and scales the kept values by
``1 / (1 - ratio)``, not ``1 - (1 - ratio)^2`` and ``1 / (1 - ratio)^2``.

Measured here as a user would: the values entering the first dropout and
leaving the last one of the attention, in the sub pass. The zoo-wide form
of this check (every family with dropout, every path) is the AugDrop
column of ``tools/analysis_tools/zoo_coverage.py --tiny``
(tests/test_tools/test_zoo_coverage.py)."""
import pytest
import torch
from mmpretrain.registry import MODELS

import augsub_mm  # noqa: F401

RATIO = 0.5
BACKBONES = {
    'RevVisionTransformer': dict(
        type='RevVisionTransformer', arch=dict(
            embed_dims=32, num_layers=2, num_heads=2,
            feedforward_channels=64), img_size=32, patch_size=8,
        out_type='avg_featmap'),
    'EdgeNeXt': dict(type='EdgeNeXt', arch=dict(
        depths=[1, 1, 1, 1], channels=[8, 16, 24, 32],
        num_heads=[2, 2, 2, 2]), gap_before_final_norm=True),
}


def build(name):
    torch.manual_seed(0)
    model = MODELS.build(dict(
        type='AugSubClassifier', augsub=dict(type='AugDrop', ratio=RATIO),
        backbone=BACKBONES[name],
        head=dict(type='LinearClsHead', num_classes=4, in_channels=32)))
    model.train()
    return model


def attention_sites(backbone):
    """(entering proj_drop, leaving out_drop) of every attention module
    that holds both."""
    seen = []
    for module in backbone.modules():
        if hasattr(module, 'proj_drop') and hasattr(module, 'out_drop'):
            pair = {}
            module.proj_drop.register_forward_hook(
                lambda m, a, o, pair=pair: pair.__setitem__('in', a[0]))
            module.out_drop.register_forward_hook(
                lambda m, a, o, pair=pair: pair.__setitem__('out', o))
            seen.append(pair)
    return seen


@pytest.mark.parametrize('name', sorted(BACKBONES))
def test_attention_output_dropped_once(name):
    model = build(name)
    sites = attention_sites(model.backbone)
    assert sites
    x = torch.randn(8, 3, 32, 32)
    for step in range(2):  # the first (checking) sub pass and a later one
        with model.sub_pass(100 + step, 'cpu'):
            model.extract_feat(x)
            model.augsub.check_acted(model.backbone)
        for pair in sites:
            before, after = pair['in'].detach(), pair['out'].detach()
            alive = before != 0
            dropped = ((after == 0) & alive).sum() / alive.sum()
            assert abs(float(dropped) - RATIO) < 0.1, (step, float(dropped))
            kept = alive & (after != 0)
            torch.testing.assert_close(
                after[kept], before[kept] / (1 - RATIO))


@pytest.mark.parametrize('name', sorted(BACKBONES))
def test_recipe_rates_restored_and_followers_named(name):
    model = build(name)
    rates = {n: m.p for n, m in model.backbone.named_modules()
             if isinstance(m, torch.nn.Dropout)}
    with model.sub_pass(1, 'cpu'):
        model.extract_feat(torch.randn(2, 3, 32, 32))
        model.augsub.check_acted(model.backbone)
    assert rates == {n: m.p for n, m in model.backbone.named_modules()
                     if isinstance(m, torch.nn.Dropout)}
    form = model.augsub.describe(model.backbone)
    assert "in series after one of them left at the recipe's rate" in form


def test_dropouts_apart_are_all_driven():
    """A plain ViT's dropouts are never in series (a linear layer or a
    residual addition lies between): all 6 (per layer: the attention's
    projection dropout and the FFN's two) are driven."""
    model = MODELS.build(dict(
        type='AugSubClassifier', augsub=dict(type='AugDrop', ratio=RATIO),
        backbone=dict(type='VisionTransformer', arch=dict(
            embed_dims=16, num_layers=2, num_heads=2,
            feedforward_channels=32), img_size=32, patch_size=8),
        head=dict(type='VisionTransformerClsHead', num_classes=4,
                  in_channels=16)))
    model.train()
    layers = model.augsub.controlled()
    with model.sub_pass(1, 'cpu'):
        model.extract_feat(torch.randn(2, 3, 32, 32))
        model.augsub.check_acted(model.backbone)
    assert model.augsub.controlled() == layers and len(layers) == 6
