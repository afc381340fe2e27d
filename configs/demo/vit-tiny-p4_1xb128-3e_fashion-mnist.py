# The demo baseline: a tiny ViT on Fashion-MNIST (real data, 28x28 grey),
# small enough to train for a few minutes on 2 CPU cores. Written like a
# model-zoo config; the AugMask demo inherits it and adds the switch-on
# lines, as a user would.
# Data: ../_base_/datasets/fashion-mnist_bs64.py (Debian's
# `dataset-fashion-mnist`, un-gzipped by tools/run_demo.sh into
# data/fashion_mnist; it says how to use another folder).
_base_ = [
    '../_base_/datasets/fashion-mnist_bs64.py',
    'mmpretrain::_base_/default_runtime.py',
]

model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='VisionTransformer',
        arch=dict(embed_dims=96, num_layers=4, num_heads=4,
                  feedforward_channels=192),
        img_size=28,
        patch_size=4,  # 7x7 = 49 patch tokens
        in_channels=1,
        drop_path_rate=0.1),
    neck=None,
    head=dict(
        type='VisionTransformerClsHead',
        num_classes=10,
        in_channels=96,
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1,
                  mode='original')),
    data_preprocessor=dict(
        num_classes=10, mean=[72.94], std=[90.02], to_rgb=False),
    init_cfg=[dict(type='TruncNormal', layer='Linear', std=.02),
              dict(type='Constant', layer='LayerNorm', val=1., bias=0.)])

# NOTE: 20k of the 60k training images per epoch keep an epoch under a
# minute on 2 cores; validation uses the full 10k test set.
train_dataloader = dict(
    batch_size=128,
    num_workers=2,
    persistent_workers=True,
    dataset=dict(indices=20000))
val_dataloader = dict(batch_size=256, num_workers=2, persistent_workers=True)
test_dataloader = val_dataloader

optim_wrapper = dict(
    optimizer=dict(type='AdamW', lr=2e-3, weight_decay=0.05),
    paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0,
                       custom_keys={'.cls_token': dict(decay_mult=0.0),
                                    '.pos_embed': dict(decay_mult=0.0)}),
    clip_grad=dict(max_norm=5.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=True, begin=0, end=1,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=1, T_max=2,
         eta_min=1e-5),
]
train_cfg = dict(by_epoch=True, max_epochs=3, val_interval=1)
val_cfg = dict()
test_cfg = dict()
auto_scale_lr = dict(base_batch_size=128)

default_hooks = dict(
    logger=dict(interval=20),
    checkpoint=dict(max_keep_ckpts=2, save_best='auto'))
randomness = dict(seed=0)
