# The study's CNN (model only): a CIFAR-style ResNet-18 at a quarter of the
# width (16 base channels) for 28x28 grey images. Every regime of the study
# (tools/study/run_study.py) inherits it next to its data/schedule base.
model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='ResNet_CIFAR',
        depth=18,
        in_channels=1,
        stem_channels=16,
        base_channels=16,
        drop_path_rate=0.05),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead',
        num_classes=10,
        in_channels=128,
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0)),
    data_preprocessor=dict(
        num_classes=10, mean=[72.94], std=[90.02], to_rgb=False))
