# Heavy-augmentation regime: the baseline with AugMask (ratio 0.5): the four
# switch-on lines (as ../resnet18-w16_1xb64-augmask_fashion-mnist-2k.py).
_base_ = './resnet18-w16_1xb64_fashion-mnist-heavy.py'

custom_imports = dict(imports=['augsub_mm'], allow_failed_imports=False)
model = dict(
    type='AugSubClassifier',
    augsub=dict(type='AugMask', ratio=0.5, input_patch_size=4))
model_wrapper_cfg = dict(type='AugSubDistributedDataParallel')
randomness = dict(diff_rank_seed=True)
