# The study baseline with AugDrop: the sub forward runs with dropout 0.5 in
# the blocks' projection and MLP dropout layers. (The ResNet has no dropout
# layers, so the study has no ResNet AugDrop run.)
_base_ = './vit-tiny-p4_1xb64_fashion-mnist-2k.py'

custom_imports = dict(imports=['augsub_mm'], allow_failed_imports=False)
model = dict(type='AugSubClassifier', augsub=dict(type='AugDrop', ratio=0.5))
model_wrapper_cfg = dict(type='AugSubDistributedDataParallel')
randomness = dict(diff_rank_seed=True)
