# AugMask (ratio 0.5) in the fine-tune of a timm ViT-S/16: the baseline's
# recipe with the sub-model switched on by the same four lines as for a
# model-zoo config. The sub-model drops half of the patch tokens at timm's
# own patch-drop site (after the position embedding; the class token is
# kept), as the paper's ViT sub-model does.
_base_ = './vit-small-p16-timm_4xb256-ft-100e_in1k.py'

custom_imports = dict(imports=['augsub_mm'], allow_failed_imports=False)
model = dict(type='AugSubClassifier', augsub=dict(type='AugMask', ratio=0.5))
model_wrapper_cfg = dict(type='AugSubDistributedDataParallel')
randomness = dict(diff_rank_seed=True)
