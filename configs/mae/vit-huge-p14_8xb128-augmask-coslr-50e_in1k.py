# AugMask (ratio 0.5) in the MAE fine-tune of ViT-H/14: the zoo recipe
# with the sub-model switched on. Masking by token dropping; the mean over
# patch tokens (out_type='avg_featmap') averages the kept tokens.
_base_ = './vit-huge-p14_8xb128-coslr-50e_in1k.py'

custom_imports = dict(imports=['augsub_mm'], allow_failed_imports=False)
model = dict(type='AugSubClassifier', augsub=dict(type='AugMask', ratio=0.5))
model_wrapper_cfg = dict(type='AugSubDistributedDataParallel')
randomness = dict(diff_rank_seed=True)
