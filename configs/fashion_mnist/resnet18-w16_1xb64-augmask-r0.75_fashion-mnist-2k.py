# Claim (3) of the study: AugMask at ratio 0.75, in the sub-model. Compare
# with resnet18-w16_1xb64-masked-r0.75_fashion-mnist-2k.py, the same masking
# in the main recipe.
_base_ = './resnet18-w16_1xb64-augmask_fashion-mnist-2k.py'

model = dict(augsub=dict(ratio=0.75))
