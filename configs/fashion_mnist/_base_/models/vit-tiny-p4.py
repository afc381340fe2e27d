# The study's ViT (model only): a small plain ViT for 28x28 grey images.
# Every regime of the study (tools/study/run_study.py) inherits it next to
# its data/schedule base, so the model is written once.
model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='VisionTransformer',
        arch=dict(embed_dims=64, num_layers=6, num_heads=4,
                  feedforward_channels=128),
        img_size=28,
        # NOTE: 4 px patches: a 7x7 token grid, the geometry of AugMask's
        # 32 px blocks at 224 px; token dropping at 0.5 keeps 24 of 49.
        patch_size=4,
        in_channels=1,
        drop_path_rate=0.1),
    neck=None,
    head=dict(
        type='VisionTransformerClsHead',
        num_classes=10,
        in_channels=64,
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0)),
    data_preprocessor=dict(
        num_classes=10, mean=[72.94], std=[90.02], to_rgb=False),
    init_cfg=[dict(type='TruncNormal', layer='Linear', std=.02),
              dict(type='Constant', layer='LayerNorm', val=1., bias=0.)])
