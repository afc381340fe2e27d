"""A user's subclass of a zoo backbone gets its parent's adapter when it
changes nothing the adapter relies on, and the input-masking fallback, with
a warning that says what differs, otherwise."""
import warnings

import pytest
import torch
import torch.nn as nn
from mmpretrain.models import VisionTransformer

import augsub_mm  # noqa: F401
from augsub_mm.models import AugSubClassifier
from augsub_mm.models.families import ViTFamily, get_family

ARCH = dict(embed_dims=16, num_layers=2, num_heads=2,
            feedforward_channels=32)


class ViTWithHelper(VisionTransformer):
    """Adds a method, overrides nothing."""

    def num_tokens(self):
        return self.patch_resolution[0] * self.patch_resolution[1]


class ViTOwnForward(VisionTransformer):
    def forward(self, x):
        return super().forward(x)


class Gate(nn.Module):
    def forward(self, x):
        return x


class ViTOwnModule(VisionTransformer):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.drop_after_pos = nn.Sequential(Gate())


def build(cls):
    return cls(arch=ARCH, img_size=32, patch_size=8)


def test_subclass_that_only_adds_gets_the_parents_adapter():
    backbone = build(ViTWithHelper)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        family = get_family(backbone)
    assert type(family) is ViTFamily and family.masking == 'token_drop'
    model = AugSubClassifier(
        augsub=dict(type='AugMask', ratio=0.5),
        backbone=dict(type=ViTWithHelper, arch=ARCH, img_size=32,
                      patch_size=8),
        head=dict(type='VisionTransformerClsHead', num_classes=4,
                  in_channels=16))
    model.train()
    lengths = []
    model.backbone.layers[0].register_forward_pre_hook(
        lambda m, a: lengths.append(a[0].shape[1]))
    with model.sub_pass(0, 'cpu'):
        model.extract_feat(torch.randn(2, 3, 32, 32))
    assert lengths == [1 + 8]  # class token + half of the 16 patches


@pytest.mark.parametrize('cls,change', [
    (ViTOwnForward, 'ViTOwnForward.forward()'),
    (ViTOwnModule, 'Gate'),
])
def test_subclass_that_changes_falls_back_with_the_reason(cls, change):
    with pytest.warns(UserWarning) as record:
        family = get_family(build(cls))
    assert family.name == 'unlisted' and family.masking == 'input'
    message = ' '.join(str(w.message) for w in record)
    assert f'{cls.__name__} derives from VisionTransformer (ViT family) ' \
        f'but changes what that adapter relies on: {change}' in message
