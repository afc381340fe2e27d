# A plain ViT classifier small enough for CPU tests, written like a
# model-zoo config (no augsub_mm in it), on a generated image folder:
# see tests/conftest.py:data_root_options to point it at other images.
_base_ = 'mmpretrain::_base_/default_runtime.py'

data_root = 'data/toy'

model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='VisionTransformer',
        arch=dict(embed_dims=32, num_layers=2, num_heads=2,
                  feedforward_channels=64),
        img_size=32,
        patch_size=8,
        drop_path_rate=0.1),
    neck=None,
    head=dict(
        type='VisionTransformerClsHead',
        num_classes=4,
        in_channels=32,
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1,
                  mode='original')),
    data_preprocessor=dict(
        num_classes=4,
        mean=[127.5, 127.5, 127.5],
        std=[127.5, 127.5, 127.5],
        to_rgb=True),
    train_cfg=dict(augments=[dict(type='Mixup', alpha=0.8),
                             dict(type='CutMix', alpha=1.0)]))

dataset_type = 'CustomDataset'
train_dataloader = dict(
    batch_size=8,
    num_workers=0,
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        pipeline=[
            dict(type='LoadImageFromFile'),
            dict(type='RandomFlip', prob=0.5, direction='horizontal'),
            dict(type='PackInputs'),
        ]),
    sampler=dict(type='DefaultSampler', shuffle=True))
val_dataloader = dict(
    batch_size=8,
    num_workers=0,
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        pipeline=[dict(type='LoadImageFromFile'), dict(type='PackInputs')]),
    sampler=dict(type='DefaultSampler', shuffle=False))
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_dataloader = val_dataloader
test_evaluator = val_evaluator

optim_wrapper = dict(
    optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05),
    clip_grad=dict(max_norm=5.0))
param_scheduler = [dict(type='CosineAnnealingLR', by_epoch=True, T_max=2)]
train_cfg = dict(by_epoch=True, max_epochs=2, val_interval=1)
val_cfg = dict()
test_cfg = dict()

default_hooks = dict(logger=dict(interval=1))
env_cfg = dict(dist_cfg=dict(backend='gloo'))
randomness = dict(seed=0)
