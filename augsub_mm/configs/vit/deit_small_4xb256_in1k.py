# New-style twin of mmpretrain's deit/deit-small_4xb256_in1k.py: a plain
# ViT-S/16 (mmpretrain's VisionTransformer) with the DeiT recipe.
from mmengine.config import read_base
from mmpretrain.models import (CutMix, ImageClassifier, LabelSmoothLoss,
                               Mixup, VisionTransformer,
                               VisionTransformerClsHead)

with read_base():
    from .._base_.datasets.imagenet_bs64_swin_224 import *
    from .._base_.default_runtime import *
    from .._base_.schedules.imagenet_bs1024_adamw_swin import *

model = dict(
    type=ImageClassifier,
    backbone=dict(type=VisionTransformer, arch='deit-small', img_size=224,
                  patch_size=16, drop_path_rate=0.1),
    neck=None,
    head=dict(
        type=VisionTransformerClsHead,
        num_classes=1000,
        in_channels=384,
        loss=dict(type=LabelSmoothLoss, label_smooth_val=0.1,
                  mode='original')),
    init_cfg=[
        dict(type='TruncNormal', layer='Linear', std=.02),
        dict(type='Constant', layer='LayerNorm', val=1., bias=0.),
    ],
    train_cfg=dict(augments=[dict(type=Mixup, alpha=0.8),
                             dict(type=CutMix, alpha=1.0)]))
train_dataloader.update(batch_size=256)
optim_wrapper.update(
    paramwise_cfg=dict(
        norm_decay_mult=0.0,
        bias_decay_mult=0.0,
        custom_keys={
            '.cls_token': dict(decay_mult=0.0),
            '.pos_embed': dict(decay_mult=0.0)
        }))
auto_scale_lr.update(base_batch_size=1024)
