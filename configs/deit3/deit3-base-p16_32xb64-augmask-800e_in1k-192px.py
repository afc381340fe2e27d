# AugMask (ratio 0.5) on DeiT-III ViT-B/16, 800 epochs at 192 px: the
# baseline recipe (the _base_ below) with the sub-model switched on;
# masking by token dropping (the ViT family's default).
_base_ = './deit3-base-p16_32xb64-800e_in1k-192px.py'

custom_imports = dict(imports=['augsub_mm'], allow_failed_imports=False)
model = dict(type='AugSubClassifier', augsub=dict(type='AugMask', ratio=0.5))
# NOTE: find_unused_parameters for the unused ln2 of mmpretrain's DeiT3
# layers (see the baseline config).
model_wrapper_cfg = dict(
    type='AugSubDistributedDataParallel', find_unused_parameters=True)
randomness = dict(diff_rank_seed=True)
