"""AugPath's compute-skipping drop-path: the same function as mmcv's
DropPath (same kept samples given the same seed, same outputs and
gradients), run on the kept samples only, and a sub pass that leaves the
backbone exactly as it found it."""
import pytest
import torch
import torch.nn as nn
from mmcv.cnn.bricks import DropPath
from mmcv.cnn.bricks.drop import drop_path
from mmpretrain.models import ResNet, VisionTransformer
from mmpretrain.models.backbones import DeiT3

from augsub_mm.models.families import get_family
from augsub_mm.models.submodels import AugPath
from augsub_mm.models.utils.drop_path import (MIN_SAVED_WORK, SkippingDropPath,
                                              draw_kept_samples,
                                              skipping_drop_path)


def mlp(channels=8):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(channels, 16), nn.GELU(),
                         nn.Linear(16, channels))


def run_with_grads(fn, x, params):
    x = x.clone().requires_grad_()
    out = fn(x)
    # A non-uniform upstream gradient, so that scaling errors show.
    out.backward(torch.arange(out.numel(), dtype=out.dtype).view_as(out))
    grads = [x.grad] + [None if p.grad is None else p.grad.clone()
                        for p in params]
    for p in params:
        p.grad = None
    return out.detach(), grads


@pytest.mark.parametrize('drop_prob', [0.25, 0.5, 0.8])
def test_same_function_as_mmcv_drop_path(drop_prob):
    branch = mlp()
    params = list(branch.parameters())
    x = torch.randn(32, 5, 8)

    torch.manual_seed(0)
    ref, ref_grads = run_with_grads(
        lambda t: drop_path(branch(t), drop_prob, training=True), x, params)
    torch.manual_seed(0)
    with skipping_drop_path(branch, drop_prob):
        out, grads = run_with_grads(branch, x, params)

    kept = ref.flatten(1).abs().sum(1) > 0
    assert 0 < kept.sum() < len(kept), 'the seed should keep some samples'
    assert torch.equal(out.flatten(1).abs().sum(1) > 0, kept)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_draw_matches_mmcv_keep_probability():
    torch.manual_seed(0)
    kept = draw_kept_samples(20000, 0.3)
    assert kept.dtype == torch.long and kept.device.type == 'cpu'
    assert abs(len(kept) / 20000 - 0.7) < 0.015
    assert torch.equal(kept, kept.unique())  # sorted, no repeats


def test_branch_computes_kept_samples_only():
    branch = mlp()
    seen = []
    branch[0].register_forward_hook(
        lambda m, args, out: seen.append(args[0].shape[0]))
    torch.manual_seed(3)
    with skipping_drop_path(branch, 0.5):
        out = branch(torch.randn(32, 4, 8))
    kept_rows = int((out.flatten(1).abs().sum(1) > 0).sum())
    assert seen == [kept_rows] and 0 < kept_rows < 32


def test_no_sample_kept_still_gives_every_parameter_a_gradient():
    branch = mlp()
    seen = []
    branch[0].register_forward_hook(
        lambda m, args, out: seen.append(args[0].shape[0]))
    torch.manual_seed(0)
    with skipping_drop_path(branch, 0.9999):
        out = branch(torch.randn(3, 4, 8))
    out.sum().backward()
    assert seen == [1]  # not an empty batch: some kernels reject it
    assert torch.count_nonzero(out) == 0 and out.shape == (3, 4, 8)
    for p in branch.parameters():
        assert p.grad is not None and torch.count_nonzero(p.grad) == 0


def test_small_calls_fall_back_to_the_plain_drop_path():
    branch = mlp()
    seen = []
    branch[0].register_forward_hook(
        lambda m, args, out: seen.append(args[0].shape[0]))
    x = torch.randn(16, 5, 8)
    torch.manual_seed(1)
    ref = drop_path(branch(x), 0.5, training=True)
    seen.clear()
    torch.manual_seed(1)
    work = 0.5 * x.numel() * x.shape[-1]
    with skipping_drop_path(branch, 0.5, min_saved_work=work + 1):
        out = branch(x)
    assert seen == [16]
    assert torch.equal(out, ref)


def tiny_backbone(kind):
    torch.manual_seed(0)
    cls = dict(vit=VisionTransformer, deit3=DeiT3)[kind]
    backbone = cls(dict(embed_dims=32, num_layers=3, num_heads=2,
                        feedforward_channels=64), img_size=32, patch_size=8,
                   drop_path_rate=0.2)
    backbone.train()
    return backbone


@pytest.mark.parametrize('kind', ['vit', 'deit3'])
def test_vit_sub_pass_skipping_equals_the_plain_drop_path(kind):
    backbone = tiny_backbone(kind)
    params = [p for p in backbone.parameters() if p.requires_grad]
    x = torch.rand(8, 3, 32, 32)
    results = {}
    for skip in (False, True):
        augpath = AugPath(0.5, skip=skip)
        augpath.bind(backbone)

        def sub_forward(t):
            with augpath.engage(backbone):
                return backbone(t)[0]

        torch.manual_seed(2)
        results[skip] = run_with_grads(sub_forward, x, params)
    (ref, ref_grads), (out, grads) = results[False], results[True]
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    for got, want in zip(grads, ref_grads):
        if want is None:  # DeiT3's ln2 is never used (mmpretrain bug)
            assert got is None
        else:
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_vit_family_exposes_both_branches_of_every_layer():
    backbone = tiny_backbone('vit')
    branches = get_family(backbone).residual_branches()
    assert len(branches) == 2 * len(backbone.layers)
    for branch, parent, name in branches:
        assert isinstance(getattr(parent, name), DropPath)


def hook_count(module):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks)
               for m in module.modules())


def snapshot(backbone):
    return ([(name, id(m)) for name, m in backbone.named_modules()],
            [m.drop_prob for m in backbone.modules()
             if isinstance(m, DropPath)], hook_count(backbone))


@pytest.mark.parametrize('skip', ['auto', True, False])
def test_engage_restores_every_module_also_when_the_forward_raises(
        skip, monkeypatch):
    backbone = tiny_backbone('vit')
    augpath = AugPath(0.5, skip=skip)
    # The hooks are registered once, at bind, and stay (switched off).
    augpath.bind(backbone)
    before = snapshot(backbone)

    def broken(x):
        raise RuntimeError('boom')

    # Raise in the middle of the network, after some branches have run.
    monkeypatch.setattr(backbone.layers[1].ln2, 'forward', broken)
    with pytest.raises(RuntimeError, match='boom'):
        with augpath.engage(backbone):
            backbone(torch.rand(2, 3, 32, 32))
    monkeypatch.undo()
    assert snapshot(backbone) == before

    with augpath.engage(backbone):
        inside = snapshot(backbone)
    assert inside != before  # the sub pass did change something
    assert snapshot(backbone) == before


def test_skip_decision():

    def skipping_hooks(augpath):
        backbone = tiny_backbone('vit')
        augpath.bind(backbone)
        hooks = backbone.layers[0].attn._forward_pre_hooks.values()
        return [h for h in hooks
                if isinstance(getattr(h, '__self__', None), SkippingDropPath)]

    assert len(skipping_hooks(AugPath(0.5))) == 1
    assert skipping_hooks(AugPath(0.5, skip=False)) == []
    assert MIN_SAVED_WORK > 0


def test_skip_argument_errors():
    with pytest.raises(ValueError, match=r"choose from \('auto', True"):
        AugPath(0.5, skip='yes')
    resnet = ResNet(18, drop_path_rate=0.1)
    with pytest.raises(ValueError, match="skip='auto' or skip=False"):
        AugPath(0.5, skip=True).bind(resnet)
    AugPath(0.5, skip='auto').bind(resnet)  # plain drop-path: no error
