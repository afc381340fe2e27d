# DeiT-III ViT-S/16, 800 epochs at 224 px: the recipe of the 400-epoch
# config with the paper's 800-epoch values.
# Baseline of ./deit3-small-p16_32xb64-augmask-800e_in1k.py.
_base_ = './deit3-small-p16_32xb64-400e_in1k.py'

model = dict(
    backbone=dict(drop_path_rate=0.05, layer_cfgs=dict(drop_path_rate=0.05)))

optim_wrapper = dict(optimizer=dict(weight_decay=0.05))

train_cfg = dict(max_epochs=800)
