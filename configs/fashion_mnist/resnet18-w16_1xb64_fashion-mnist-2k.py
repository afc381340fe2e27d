# Study baseline (CNN): a CIFAR-style ResNet-18 at a quarter of the width
# (16 base channels) on a 2k-image Fashion-MNIST subset, written like a
# model-zoo config (no augsub_mm in it): the model
# (_base_/models/resnet18-w16.py) plus the over-fitting regime's data and
# schedule. Its AugSub variants inherit it and add the four switch-on lines.
_base_ = ['./_base_/models/resnet18-w16.py',
          './_base_/fashion-mnist-study.py']
