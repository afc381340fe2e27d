# MAE fine-tune of ViT-H/14 on ImageNet-1k, 50 epochs: the
# model-zoo recipe as is (AdamW, layer-wise lr decay, Mixup 0.8 / CutMix
# 1.0, label smoothing 0.1, random erasing 0.25, global average pooling),
# the standard MAE fine-tune that the paper uses. Set the pre-trained MAE
# encoder with --cfg-options model.backbone.init_cfg.checkpoint=<path>.
# Baseline of ./vit-huge-p14_8xb128-augmask-coslr-50e_in1k.py.
_base_ = 'mmpretrain::mae/benchmarks/vit-huge-p14_8xb128-coslr-50e_in1k.py'
