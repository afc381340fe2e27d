"""AugMask token dropping on the plain ViT family, through the real hook."""
import pytest
import torch
from mmpretrain.models import DeiT3, VisionTransformer

from augsub_mm.models import AugMask
from augsub_mm.models.utils import drop_tokens, num_kept

ARCH = dict(embed_dims=32, num_layers=2, num_heads=2, feedforward_channels=64)


def sequence_seen_by_first_layer(backbone, augmask, x):
    seen = []
    handle = backbone.layers[0].register_forward_pre_hook(
        lambda m, args: seen.append(args[0]))
    with augmask.engage(backbone):
        backbone(x)
    handle.remove()
    return seen[0]


@pytest.mark.parametrize('ratio', [0.25, 0.5, 0.75])
@pytest.mark.parametrize('backbone_cls,kwargs,prefix', [
    (VisionTransformer, dict(), 1),
    (VisionTransformer, dict(with_cls_token=False, out_type='avg_featmap'),
     0),
    (DeiT3, dict(), 1),
])
def test_token_counts_and_prefix(ratio, backbone_cls, kwargs, prefix):
    backbone = backbone_cls(arch=ARCH, img_size=32, patch_size=4, **kwargs)
    augmask = AugMask(ratio=ratio)
    augmask.bind(backbone)
    seq = sequence_seen_by_first_layer(backbone, augmask,
                                       torch.rand(3, 3, 32, 32))
    assert seq.shape == (3, prefix + num_kept(64, ratio), 32)
    assert num_kept(64, ratio) == int(64 * (1 - ratio))
    if prefix:
        # The class token (+ its position embedding for ViT) is in front.
        cls = backbone.cls_token[0, 0]
        if backbone_cls is VisionTransformer:
            cls = cls + backbone.pos_embed[0, 0]
        for sample in seq:
            assert torch.allclose(sample[0], cls)
    # Outside the context the backbone is plain again.
    full = []
    handle = backbone.layers[0].register_forward_pre_hook(
        lambda m, args: full.append(args[0]))
    backbone(torch.rand(3, 3, 32, 32))
    handle.remove()
    assert full[0].shape[1] == prefix + 64


def test_masks_independent_per_sample_and_tokens_real():
    B, L, C = 16, 64, 4
    # Each token carries its own index, so we can read which were kept.
    x = torch.arange(L, dtype=torch.float).view(1, L, 1).expand(B, L, C)
    x = torch.cat([torch.full((B, 1, C), -1.), x], dim=1)
    out = drop_tokens(x, 0.5, num_prefix_tokens=1)
    assert out.shape == (B, 1 + 32, C)
    assert (out[:, 0] == -1).all()
    kept = out[:, 1:, 0].long()
    for row in kept:
        assert len(set(row.tolist())) == 32  # no token twice
    assert len({tuple(row.tolist()) for row in kept}) == B  # per sample
    # Over many draws every position is kept about half of the time.
    counts = torch.zeros(L)
    for _ in range(50):
        idx = drop_tokens(x, 0.5, 1)[:, 1:, 0].long()
        counts += torch.bincount(idx.flatten(), minlength=L)
    freq = counts / (50 * B)
    assert freq.min() > 0.3 and freq.max() < 0.7


def test_ratio_that_keeps_nothing_is_an_error():
    with pytest.raises(ValueError, match='keeps no token'):
        drop_tokens(torch.rand(2, 5, 8), 0.9, num_prefix_tokens=1)


def test_avg_featmap_averages_kept_tokens_only():
    backbone = VisionTransformer(arch=ARCH, img_size=32, patch_size=4,
                                 out_type='avg_featmap', final_norm=False)
    augmask = AugMask(ratio=0.5)
    augmask.bind(backbone)
    last = []
    backbone.layers[-1].register_forward_hook(
        lambda m, args, out: last.append(out))
    with augmask.engage(backbone):
        feat = backbone(torch.rand(2, 3, 32, 32))[0]
    expected = backbone.ln2(last[0][:, 1:].mean(dim=1))
    assert last[0].shape[1] == 33
    assert torch.allclose(feat, expected)


def test_hook_switched_off_when_forward_raises():
    backbone = VisionTransformer(arch=ARCH, img_size=32, patch_size=4)
    augmask = AugMask(ratio=0.5)
    augmask.bind(backbone)
    with pytest.raises(RuntimeError):
        with augmask.engage(backbone):
            backbone(torch.rand(2, 5, 32, 32))  # wrong channel count
    assert not augmask.switch.on
    x = torch.rand(2, 3, 32, 32)
    seen = []
    backbone.layers[0].register_forward_pre_hook(
        lambda m, args: seen.append(args[0].shape[1]))
    backbone(x)
    assert seen == [1 + 64]  # every token: the hook does nothing
    augmask.unbind()
    assert not backbone.drop_after_pos._forward_hooks
