"""Layer-wise lr decay (the MAE / BEiT fine-tune recipes') for timm models:
TimmLayerDecayOptimWrapperConstructor, with and without AugSub, under the
switch's AugSubOptimWrapperConstructor. The expected depths are written
out by hand from the ViT's structure, not read from timm's grouping."""
import pytest
import torch
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
from mmpretrain.registry import MODELS

import augsub_mm  # noqa: F401

timm = pytest.importorskip('timm')

LR, RATE, WD = 1e-3, 0.5, 0.05
VIT = dict(model_name='vit_tiny_patch16_224', img_size=32, patch_size=8,
           depth=2, embed_dim=32, num_heads=2)


@pytest.fixture(autouse=True)
def mmpretrain_scope():
    init_default_scope('mmpretrain')


def optim_cfg(constructor='TimmLayerDecayOptimWrapperConstructor', **extra):
    return dict(type='OptimWrapper',
                optimizer=dict(type='AdamW', lr=LR, weight_decay=WD),
                constructor=constructor,
                paramwise_cfg=dict(layer_decay_rate=RATE,
                                   flat_decay_mult=0.0), **extra)


def vit_depth(name: str) -> int:
    """The layer of a timm ViT (2 blocks) parameter: stem 0, block i at
    i + 1, the final norm with the last block, the head 3."""
    name = name.split('model.', 1)[-1]
    if name.startswith(('cls_token', 'pos_embed', 'patch_embed')):
        return 0
    if name.startswith('blocks.'):
        return int(name.split('.')[1]) + 1
    if name.startswith('norm.'):
        return 2
    return 3  # head


def lr_of(optimizer):
    return {id(p): (g['lr'], g['weight_decay'])
            for g in optimizer.param_groups for p in g['params']}


@pytest.mark.parametrize('augsub', [None, 'token_drop', 'mask_token'])
def test_timm_classifier_lrs_decay_by_depth(augsub):
    cfg = dict(type='TimmClassifier', pretrained=False, num_classes=4, **VIT)
    optim = optim_cfg()
    if augsub:
        cfg.update(type='AugSubClassifier', augsub=dict(
            type='AugMask', ratio=0.5, masking=augsub))
        # What prepare_augsub_config makes of the recipe's constructor.
        optim = optim_cfg('AugSubOptimWrapperConstructor',
                          base_constructor=optim['constructor'])
    model = MODELS.build(cfg)
    lrs = lr_of(build_optim_wrapper(model, optim).optimizer)
    names = dict(model.named_parameters())
    for name, param in names.items():
        if name.startswith('augsub.'):
            continue
        lr, wd = lrs[id(param)]
        assert lr == pytest.approx(LR * RATE**(3 - vit_depth(name))), name
        assert wd == (0.0 if param.ndim == 1 else WD), name
    if augsub == 'mask_token':
        # With the patch embedding (layer 0), out of weight decay.
        assert lrs[id(names['augsub.mask_token'])] == \
            (pytest.approx(LR * RATE**3), 0.0)
    else:
        assert not any(n.startswith('augsub.') for n in names)


def test_timm_backbone_in_image_classifier():
    model = MODELS.build(dict(
        type='ImageClassifier',
        backbone=dict(type='TIMMBackbone', pretrained=False, num_classes=0,
                      **VIT),
        neck=None,
        head=dict(type='LinearClsHead', num_classes=4, in_channels=32)))
    lrs = lr_of(build_optim_wrapper(model, optim_cfg()).optimizer)
    for name, param in model.named_parameters():
        depth = vit_depth(name) if name.startswith('backbone.') else 3
        assert lrs[id(param)][0] == pytest.approx(LR * RATE**(3 - depth)), \
            name


def test_model_without_timm_is_refused_by_name():
    model = MODELS.build(dict(
        type='ImageClassifier',
        backbone=dict(type='ResNet', depth=18),
        head=dict(type='LinearClsHead', num_classes=4, in_channels=512)))
    with pytest.raises(TypeError, match='found no timm model in '
                       'ImageClassifier.*LearningRateDecayOptimWrapper'):
        build_optim_wrapper(model, optim_cfg())


def test_the_layer_decayed_model_trains_one_step():
    model = MODELS.build(dict(
        type='AugSubClassifier', pretrained=False, num_classes=4,
        augsub=dict(type='AugMask', ratio=0.5), **VIT,
        data_preprocessor=dict(type='mmpretrain.ClsDataPreprocessor',
                               num_classes=4)))
    wrapper = build_optim_wrapper(model, optim_cfg(
        'AugSubOptimWrapperConstructor',
        base_constructor='TimmLayerDecayOptimWrapperConstructor'))
    from mmpretrain.structures import DataSample
    data = dict(inputs=[torch.rand(3, 32, 32) * 255 for _ in range(2)],
                data_samples=[DataSample().set_gt_label(i) for i in (0, 1)])
    fc1 = model.model.blocks[0].mlp.fc1.weight
    before = fc1.detach().clone()
    log = model.train_step(data, wrapper)
    assert set(log) >= {'loss', 'loss_sub'}
    assert not torch.equal(before, fc1.detach())


def test_fsdp_unit_names_keep_their_depth():
    """FSDP's nested units put ``_fsdp_wrapped_module.`` into the
    parameter names the constructor sees."""
    from augsub_mm.engine.optimizers import \
        timm_layer_decay_optim_wrapper_constructor as constructor
    model = MODELS.build(dict(type='TimmClassifier', pretrained=False,
                              num_classes=4, **VIT))
    depth = constructor.timm_layer_depth(model)
    for name in ('model.blocks.0.attn.qkv.weight', 'model.cls_token',
                 'model.head.weight'):
        parts = name.split('.')
        wrapped = '.'.join(parts[:-1] + ['_fsdp_wrapped_module', parts[-1]])
        assert depth(wrapped) == depth(name) == (vit_depth(name), 4), name


def test_mmpretrain_layer_decay_on_a_timm_model_names_ours():
    """A MAE-style recipe's constructor on a timm config, with the switch:
    MMPretrain's error, and which constructor to name instead."""
    model = MODELS.build(dict(
        type='AugSubClassifier', pretrained=False, num_classes=4,
        augsub=dict(type='AugMask', ratio=0.5), **VIT))
    with pytest.raises(NotImplementedError, match='get_layer_depth.*name '
                       "constructor='TimmLayerDecayOptimWrapperConstructor'"):
        build_optim_wrapper(model, optim_cfg(
            'AugSubOptimWrapperConstructor',
            base_constructor='LearningRateDecayOptimWrapperConstructor'))


def test_features_only_backbone_is_refused_by_name():
    """timm's features_only wrappers have no layer grouping."""
    model = MODELS.build(dict(
        type='ImageClassifier',
        backbone=dict(type='TIMMBackbone', pretrained=False,
                      features_only=True, out_indices=(-1, ),
                      model_name='resnet18'),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='LinearClsHead', num_classes=4, in_channels=512)))
    with pytest.raises(TypeError, match='has no group_matcher.*features_only'):
        build_optim_wrapper(model, optim_cfg())
