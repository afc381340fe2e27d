# Swin-B on ImageNet-1k, 300 epochs: the model-zoo recipe as is, which is the
# standard Swin recipe the paper uses (AdamW lr 1e-3 for a batch of 1024,
# i.e. 5e-4 per 512, weight decay 0.05, gradient clipping 5.0, drop-path
# 0.5, RandAugment, Mixup/CutMix, label smoothing 0.1, random erasing 0.25).
# Baseline of ./swin-base_16xb64-augmask_in1k.py.
_base_ = 'mmpretrain::swin_transformer/swin-base_16xb64_in1k.py'
