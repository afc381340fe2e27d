# Heavy-augmentation regime, ResNet baseline: the study's ResNet
# (../_base_/models/resnet18-w16.py) on the regime's data and schedule
# (../_base_/fashion-mnist-heavy.py), with Mixup 0.8 + CutMix 1.0 in the
# data preprocessor (one of them per batch) and soft-target cross-entropy
# on the mixed labels. Its AugSub variants inherit it and add the four
# switch-on lines.
_base_ = ['../_base_/models/resnet18-w16.py',
          '../_base_/fashion-mnist-heavy.py']

model = dict(
    head=dict(loss=dict(type='CrossEntropyLoss', use_soft=True,
                        loss_weight=1.0)),
    train_cfg=dict(augments=[dict(type='Mixup', alpha=0.8),
                             dict(type='CutMix', alpha=1.0)]))
