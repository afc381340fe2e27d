# The demo: AugMask (ratio 0.5, token dropping) switched on for the plain
# demo config with the same four lines a user adds to a model-zoo config.
_base_ = './vit-tiny-p4_1xb128-3e_fashion-mnist.py'

custom_imports = dict(imports=['augsub_mm'], allow_failed_imports=False)
model = dict(type='AugSubClassifier', augsub=dict(type='AugMask', ratio=0.5))
model_wrapper_cfg = dict(type='AugSubDistributedDataParallel')
randomness = dict(diff_rank_seed=True)
