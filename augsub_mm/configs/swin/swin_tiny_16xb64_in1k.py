# New-style twin of mmpretrain's swin_transformer/swin-tiny_16xb64_in1k.py
# (the recipe AugMask is switched on for next door).
from mmengine.config import read_base
from mmpretrain.models import (CutMix, GlobalAveragePooling, ImageClassifier,
                               LabelSmoothLoss, LinearClsHead, Mixup,
                               SwinTransformer)

with read_base():
    from .._base_.datasets.imagenet_bs64_swin_224 import *
    from .._base_.default_runtime import *
    from .._base_.schedules.imagenet_bs1024_adamw_swin import *

model = dict(
    type=ImageClassifier,
    backbone=dict(type=SwinTransformer, arch='tiny', img_size=224,
                  drop_path_rate=0.2),
    neck=dict(type=GlobalAveragePooling),
    head=dict(
        type=LinearClsHead,
        num_classes=1000,
        in_channels=768,
        init_cfg=None,
        loss=dict(type=LabelSmoothLoss, label_smooth_val=0.1,
                  mode='original'),
        cal_acc=False),
    init_cfg=[
        dict(type='TruncNormal', layer='Linear', std=0.02, bias=0.),
        dict(type='Constant', layer='LayerNorm', val=1., bias=0.)
    ],
    train_cfg=dict(augments=[dict(type=Mixup, alpha=0.8),
                             dict(type=CutMix, alpha=1.0)]))
optim_wrapper.update(clip_grad=dict(max_norm=5.0))
