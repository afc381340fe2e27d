# Heavy-augmentation regime: the baseline with AugPath (drop-path 0.5 in
# every residual branch of the sub forward): the four switch-on lines.
_base_ = './resnet18-w16_1xb64_fashion-mnist-heavy.py'

custom_imports = dict(imports=['augsub_mm'], allow_failed_imports=False)
model = dict(type='AugSubClassifier', augsub=dict(type='AugPath', ratio=0.5))
model_wrapper_cfg = dict(type='AugSubDistributedDataParallel')
randomness = dict(diff_rank_seed=True)
