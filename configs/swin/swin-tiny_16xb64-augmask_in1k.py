# AugMask (ratio 0.5) on Swin-T: the zoo recipe with the sub-model switched
# on. Masked 32 x 32 px blocks (8 x 8 tokens) are replaced by a learnable
# mask token after patch embedding.
_base_ = './swin-tiny_16xb64_in1k.py'

custom_imports = dict(imports=['augsub_mm'], allow_failed_imports=False)
model = dict(type='AugSubClassifier', augsub=dict(type='AugMask', ratio=0.5))
model_wrapper_cfg = dict(type='AugSubDistributedDataParallel')
randomness = dict(diff_rank_seed=True)

# The mask token gets a parameter group of its own without weight decay,
# next to the recipe's paramwise_cfg (AugMask refuses to train otherwise).
optim_wrapper = dict(constructor='AugSubOptimWrapperConstructor')
