# AugMask (ratio 0.5) on ResNet-50 with RSB A2: the baseline recipe with
# the sub-model switched on. The sub-model sees the normalised input with
# half of its 32 x 32 px patches set to zero.
_base_ = './resnet50_8xb256-rsb-a2-300e_in1k.py'

custom_imports = dict(imports=['augsub_mm'], allow_failed_imports=False)
model = dict(type='AugSubClassifier', augsub=dict(type='AugMask', ratio=0.5))
model_wrapper_cfg = dict(type='AugSubDistributedDataParallel')
randomness = dict(diff_rank_seed=True)
