# AugMask (ratio 0.5) in the 224 px fine-tune of DeiT-III ViT-L/16: the
# baseline recipe (the _base_ below) with the sub-model switched on,
# as in the paper (the pre-training used AugMask too).
_base_ = './deit3-large-p16_32xb64-ft-20e_in1k.py'

custom_imports = dict(imports=['augsub_mm'], allow_failed_imports=False)
model = dict(type='AugSubClassifier', augsub=dict(type='AugMask', ratio=0.5))
# NOTE: find_unused_parameters for the unused ln2 of mmpretrain's DeiT3
# layers (see the baseline config).
model_wrapper_cfg = dict(
    type='AugSubDistributedDataParallel', find_unused_parameters=True)
randomness = dict(diff_rank_seed=True)
