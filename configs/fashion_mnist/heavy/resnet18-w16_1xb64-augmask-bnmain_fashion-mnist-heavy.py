# Heavy-augmentation regime: AugMask 0.5 as in
# ./resnet18-w16_1xb64-augmask_fashion-mnist-heavy.py, except that the sub
# pass leaves the BatchNorm running statistics to the main pass
# (sub_bn_stats='frozen'; the paper's behaviour, 'update', lets the masked
# batch move them too). Same gradient; only the statistics used at test
# time differ.
_base_ = './resnet18-w16_1xb64-augmask_fashion-mnist-heavy.py'

model = dict(sub_bn_stats='frozen')
