# New-style twin of mmpretrain's resnet/resnet50_8xb32_in1k.py.
from mmengine.config import read_base
from mmpretrain.models import (CrossEntropyLoss, GlobalAveragePooling,
                               ImageClassifier, LinearClsHead, ResNet)

with read_base():
    from .._base_.datasets.imagenet_bs32 import *
    from .._base_.default_runtime import *
    from .._base_.schedules.imagenet_bs256 import *

model = dict(
    type=ImageClassifier,
    backbone=dict(type=ResNet, depth=50, num_stages=4, out_indices=(3, ),
                  style='pytorch'),
    neck=dict(type=GlobalAveragePooling),
    head=dict(type=LinearClsHead, num_classes=1000, in_channels=2048,
              loss=dict(type=CrossEntropyLoss, loss_weight=1.0),
              topk=(1, 5)))
