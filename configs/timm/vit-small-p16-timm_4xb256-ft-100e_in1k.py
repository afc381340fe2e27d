# Fine-tune of a timm ViT-S/16 on ImageNet-1k, 100 epochs, through
# MMPretrain's TimmClassifier: the DeiT-S recipe of the model zoo (AdamW,
# Mixup 0.8 / CutMix 1.0, label smoothing 0.1, RandAugment, random erasing
# 0.25) at a fine-tuning learning rate, with drop-path 0.1. The model is
# timm's own (timm.create_model arguments pass through): load the
# pre-trained weights from a local timm checkpoint with
#   --cfg-options model.checkpoint_path=/path/to/vit_small_checkpoint.pth
# (nothing is downloaded: pretrained=False). Layer-wise lr decay 0.75, as
# in the MAE fine-tune recipes: TimmClassifier has no get_layer_depth for
# MMPretrain's LearningRateDecayOptimWrapperConstructor, so augsub_mm's
# TimmLayerDecayOptimWrapperConstructor reads timm's own layer grouping
# (the only use of augsub_mm in this baseline).
# Baseline of ./vit-small-p16-timm_4xb256-augmask-ft-100e_in1k.py.
_base_ = 'mmpretrain::deit/deit-small_4xb256_in1k.py'

model = dict(
    _delete_=True,
    type='TimmClassifier',
    model_name='vit_small_patch16_224',
    pretrained=False,
    checkpoint_path='',
    num_classes=1000,
    drop_path_rate=0.1,
    loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
    train_cfg=dict(augments=[
        dict(type='Mixup', alpha=0.8),
        dict(type='CutMix', alpha=1.0)
    ]),
)

custom_imports = dict(imports=['augsub_mm'], allow_failed_imports=False)
# 4 GPUs x 256: lr 5e-4 for the batch of 1024, 5 warm-up epochs.
optim_wrapper = dict(
    optimizer=dict(lr=5e-4),
    constructor='TimmLayerDecayOptimWrapperConstructor',
    paramwise_cfg=dict(layer_decay_rate=0.75))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, end=5,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=1e-6, by_epoch=True, begin=5)
]
train_cfg = dict(max_epochs=100)
