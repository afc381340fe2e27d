# DeiT-III ViT-H/14, 800 epochs at 160 px: the recipe of the 400-epoch
# config with the paper's 800-epoch values.
# Baseline of ./deit3-huge-p14_32xb64-augmask-800e_in1k-160px.py.
_base_ = './deit3-huge-p14_32xb64-400e_in1k-160px.py'

model = dict(
    backbone=dict(drop_path_rate=0.6, layer_cfgs=dict(drop_path_rate=0.6)))

train_cfg = dict(max_epochs=800)
