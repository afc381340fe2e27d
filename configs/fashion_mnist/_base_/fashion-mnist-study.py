# Data, schedule and runtime shared by every model of the Fashion-MNIST
# study (tools/study/run_study.py): a fixed subset of the training set and
# enough epochs to overfit it, so that regularization matters; evaluated on
# the full 10k test set. Only the model differs between the study's configs.
# Data: Debian's `dataset-fashion-mnist`, un-gzipped into data/fashion_mnist
# by augsub_mm.utils.prepare_fashion_mnist (the study driver calls it).
data_root = 'data/fashion_mnist'
# NOTE: the first 2000 of the 60k training images (about 200 per class) for
# 60 epochs: both baselines overfit them. In trial runs the ViT's training
# loss fell from 0.40 at epoch 30 to 0.09 at epoch 60 while its test top-1
# stayed near 78%; the ResNet's was under 0.03 by epoch 30 (at lr 1e-3).
# The whole study (33 runs) takes about 80 minutes on 2 CPU cores.
num_train = 2000
max_epochs = 60

train_pipeline = [
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [dict(type='PackInputs')]

train_dataloader = dict(
    batch_size=64,
    num_workers=0,
    dataset=dict(
        type='FashionMNIST',
        data_root=data_root,
        split='train',
        download=False,
        indices=num_train,
        pipeline=train_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=True))
# NOTE: mmpretrain 1.2.0's MNIST datasets choose their files by `test_mode`,
# not by `split`: without test_mode=True, split='test' loads the 60k
# training images.
val_dataloader = dict(
    batch_size=500,
    num_workers=0,
    dataset=dict(
        type='FashionMNIST',
        data_root=data_root,
        split='test',
        test_mode=True,
        download=False,
        pipeline=test_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False))
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_dataloader = val_dataloader
test_evaluator = val_evaluator

optim_wrapper = dict(
    optimizer=dict(type='AdamW', lr=2e-3, weight_decay=0.05),
    paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0),
    clip_grad=dict(max_norm=5.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=True, begin=0, end=3,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=3, end=max_epochs,
         eta_min=1e-5, convert_to_iter_based=True),
]
train_cfg = dict(by_epoch=True, max_epochs=max_epochs, val_interval=10)
val_cfg = dict()
test_cfg = dict()

default_scope = 'mmpretrain'
# NOTE: every iteration is logged unsmoothed (interval 1, window 1), so that
# tools/analysis_tools/compare_runs.py gets exact per-epoch mean losses.
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=1),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', interval=-1, save_last=True),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='VisualizationHook', enable=False))
log_processor = dict(window_size=1)
env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'))
vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='UniversalVisualizer', vis_backends=vis_backends)
log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed=0, deterministic=False)
