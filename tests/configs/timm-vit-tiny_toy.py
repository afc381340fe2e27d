# A plain timm ViT through MMPretrain's TimmClassifier, small enough for CPU
# tests, written like a user's config (no augsub_mm in it): the toy recipe
# of ./vit-tiny_toy.py with its model replaced.
_base_ = './vit-tiny_toy.py'

model = dict(
    _delete_=True,
    type='TimmClassifier',
    model_name='vit_tiny_patch16_224',
    pretrained=False,
    img_size=32,
    patch_size=8,
    depth=2,
    embed_dim=32,
    num_heads=2,
    num_classes=4,
    drop_path_rate=0.1,
    loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
    data_preprocessor=dict(
        num_classes=4,
        mean=[127.5, 127.5, 127.5],
        std=[127.5, 127.5, 127.5],
        to_rgb=True),
    train_cfg=dict(augments=[dict(type='Mixup', alpha=0.8),
                             dict(type='CutMix', alpha=1.0)]))
