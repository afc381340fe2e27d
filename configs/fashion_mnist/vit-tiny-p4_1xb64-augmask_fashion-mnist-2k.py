# The study baseline with AugMask (ratio 0.5): the four switch-on lines.
# For this backbone AugMask means token dropping: 24 of the 49 patch tokens
# are kept.
_base_ = './vit-tiny-p4_1xb64_fashion-mnist-2k.py'

custom_imports = dict(imports=['augsub_mm'], allow_failed_imports=False)
model = dict(type='AugSubClassifier', augsub=dict(type='AugMask', ratio=0.5))
model_wrapper_cfg = dict(type='AugSubDistributedDataParallel')
randomness = dict(diff_rank_seed=True)
