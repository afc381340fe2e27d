# The study baseline with AugMask (ratio 0.5): the four switch-on lines.
# For this backbone AugMask means input masking. NOTE: in 4x4 px patches,
# a 7x7 grid: the geometry of the paper's 32 px patches at 224 px (a 32 px
# patch would mask the whole 28 px image).
_base_ = './resnet18-w16_1xb64_fashion-mnist-2k.py'

custom_imports = dict(imports=['augsub_mm'], allow_failed_imports=False)
model = dict(
    type='AugSubClassifier',
    augsub=dict(type='AugMask', ratio=0.5, input_patch_size=4))
model_wrapper_cfg = dict(type='AugSubDistributedDataParallel')
randomness = dict(diff_rank_seed=True)
