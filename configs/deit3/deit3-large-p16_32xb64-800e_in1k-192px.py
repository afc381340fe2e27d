# DeiT-III ViT-L/16, 800 epochs at 192 px: the recipe of the 400-epoch
# config with the paper's 800-epoch values.
# Baseline of ./deit3-large-p16_32xb64-augmask-800e_in1k-192px.py.
_base_ = './deit3-large-p16_32xb64-400e_in1k-192px.py'

model = dict(
    backbone=dict(drop_path_rate=0.45, layer_cfgs=dict(drop_path_rate=0.45)))

train_cfg = dict(max_epochs=800)
