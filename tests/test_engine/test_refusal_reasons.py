"""Refusals name the reason that applies, not only raise."""
import pytest
import torch
from mmengine.optim import OptimWrapper
from mmpretrain.registry import MODELS

import augsub_mm  # noqa: F401
from test_refusals import batch, world_of_one  # noqa: F401 (a fixture)


def linear_probe(skip):
    """MoCo v3's linear-probe recipe, tiny: every block frozen (eval mode),
    drop-path slots in each."""
    return MODELS.build(dict(
        type='AugSubClassifier',
        augsub=dict(type='AugPath', ratio=0.5, skip=skip),
        backbone=dict(type='MoCoV3ViT', arch=dict(
            embed_dims=16, num_layers=2, num_heads=2,
            feedforward_channels=32), img_size=32, patch_size=8,
            drop_path_rate=0.1, frozen_stages=2, out_type='cls_token'),
        head=dict(type='VisionTransformerClsHead', num_classes=4,
                  in_channels=16),
        data_preprocessor=dict(num_classes=4)))


@pytest.mark.parametrize('skip', ['auto', True, False])
def test_frozen_blocks_named_whatever_the_skipping(skip):
    """With skipping, the sub pass holds nn.Identity in the skipped slots;
    the reason is still read off the slots as bound (4 here), not a new
    scan that finds none."""
    model = linear_probe(skip)
    model.train()
    assert model.augsub.describe(model.backbone).startswith(
        'drop-path (4 slots')
    params = [p for p in model.parameters() if p.requires_grad]
    optim = OptimWrapper(torch.optim.SGD(params, lr=0.1))
    with pytest.raises(RuntimeError) as error:
        model.train_step(batch(), optim)
    message = str(error.value)
    assert 'AugPath changed nothing in the sub pass of MoCoV3ViT' in message
    assert 'blocks in eval mode' in message and 'linear-probe' in message
    assert 'no drop-path slot' not in message


def vit(**sub_loss):
    return dict(
        type='AugSubClassifier', augsub=dict(type='AugMask', ratio=0.5),
        backbone=dict(type='VisionTransformer', arch=dict(
            embed_dims=16, num_layers=2, num_heads=2,
            feedforward_channels=32), img_size=32, patch_size=8),
        head=dict(type='VisionTransformerClsHead', num_classes=4,
                  in_channels=16, **sub_loss.pop('head', {})),
        **sub_loss)


@pytest.mark.parametrize('weight', [0, 0.0, -1.0, True, 'half'])
def test_sub_loss_weight_must_be_positive(weight):
    """At weight 0 the sub pass costs a forward and a backward and trains
    nothing: refused like ratio=0, by name."""
    with pytest.raises(ValueError) as error:
        MODELS.build(vit(sub_loss=dict(type='AugSubLoss',
                                       loss_weight=weight)))
    message = str(error.value)
    assert 'sub_loss.loss_weight to be a number > 0' in message
    assert repr(weight) in message and 'contributes nothing' in message


def test_head_loss_weight_zero_is_refused_through_the_sub_loss():
    """Unset, the sub loss's weight follows the head loss's: a head loss of
    weight 0 would make both contribute nothing; the message names where
    the 0 comes from."""
    with pytest.raises(ValueError, match='loss_weight of the head loss '
                       'CrossEntropyLoss'):
        MODELS.build(vit(head=dict(loss=dict(type='CrossEntropyLoss',
                                             loss_weight=0.))))


def test_positive_weight_still_trains():
    model = MODELS.build(vit(sub_loss=dict(type='AugSubLoss',
                                           loss_weight=0.5)))
    assert model.sub_loss.loss_weight == 0.5
    optim = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1))
    log_vars = model.train_step(batch(), optim)
    assert torch.isfinite(log_vars['loss_sub'])


@pytest.mark.parametrize('find_unused', [False, True])
def test_main_only_parameter_under_ddp(world_of_one, find_unused):
    """A parameter only the main pass uses would get its rank's own
    gradient (DDP all-reduces what the sub backward reaches): refused at
    the first step, before any update, unless find_unused_parameters."""
    from augsub_mm.models.wrappers import AugSubDistributedDataParallel
    model = MODELS.build(vit())
    model.main_only = torch.nn.Parameter(torch.ones(()))
    main_branch = model._main_branch

    def with_main_only(inputs, data_samples):
        losses, teacher = main_branch(inputs, data_samples)
        losses['loss'] = losses['loss'] * model.main_only
        return losses, teacher

    model._main_branch = with_main_only
    ddp = AugSubDistributedDataParallel(
        model, device_ids=None, find_unused_parameters=find_unused)
    optim = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    if find_unused:
        ddp.train_step(batch(), optim)
        return
    with pytest.raises(RuntimeError, match='only the main pass uses '
                       'main_only.*find_unused_parameters=True'):
        ddp.train_step(batch(), optim)
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name
