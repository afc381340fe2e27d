# The study baseline with AugPath: the sub forward runs with drop-path 0.5
# in every residual branch (the recipe's own drop-path is restored after).
_base_ = './resnet18-w16_1xb64_fashion-mnist-2k.py'

custom_imports = dict(imports=['augsub_mm'], allow_failed_imports=False)
model = dict(type='AugSubClassifier', augsub=dict(type='AugPath', ratio=0.5))
model_wrapper_cfg = dict(type='AugSubDistributedDataParallel')
randomness = dict(diff_rank_seed=True)
