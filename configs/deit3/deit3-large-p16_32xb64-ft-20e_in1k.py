# 20-epoch fine-tune at 224 px of a DeiT-III ViT-L/16 pre-trained at 192 px
# (./deit3-large-p16_32xb64-400e_in1k-192px.py
# or ./deit3-large-p16_32xb64-800e_in1k-192px.py).
# The training settings of the zoo config are those of this stage (AdamW
# lr 1e-5, weight decay 0.1, Mixup/CutMix, label smoothing 0.1,
# RandAugment); the schedule is shortened to 20 epochs.
# Baseline of ./deit3-large-p16_32xb64-augmask-ft-20e_in1k.py.
_base_ = 'mmpretrain::deit3/deit3-large-p16_64xb64_in1k.py'

# NOTE: the drop-path rate is the zoo config's, constant over depth as in
# DeiT III; the paper does not give the fine-tune value.
model = dict(
    backbone=dict(drop_path_rate=0.45, layer_cfgs=dict(drop_path_rate=0.45)))

train_dataloader = dict(batch_size=64)

param_scheduler = [
    dict(
        type='LinearLR',
        start_factor=1e-3,
        by_epoch=True,
        begin=0,
        end=5,
        convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=1e-6, by_epoch=True, begin=5),
]
train_cfg = dict(by_epoch=True, max_epochs=20, val_interval=1)

# NOTE: mmpretrain's DeiT3 layers build ln2 but never use it (1.2.0).
find_unused_parameters = True

# The pre-trained checkpoint, e.g. --cfg-options load_from=<path>; the
# position embedding is resized from 192 to 224 px on load.
load_from = None

# NOTE: `auto_scale_lr` is for automatically scaling LR,
# based on the actual training batch size.
auto_scale_lr = dict(base_batch_size=2048)
