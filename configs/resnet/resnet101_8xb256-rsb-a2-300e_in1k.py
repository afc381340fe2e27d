# ResNet-101 on ImageNet-1k with ResNet Strikes Back A2 (300 epochs): the
# model zoo has RSB recipes for ResNet-50 only, so this is that recipe
# (LAMB lr 5e-3, weight decay 0.02, BCE, Mixup 0.1 / CutMix 1.0,
# RandAugment m7, repeated augmentation, drop-path 0.05, test crop 0.95,
# batch 2048) with a ResNet-101, as in the paper.
# Baseline of ./resnet101_8xb256-augmask-rsb-a2-300e_in1k.py.
_base_ = 'mmpretrain::resnet/resnet50_8xb256-rsb-a2-300e_in1k.py'

model = dict(backbone=dict(depth=101))
