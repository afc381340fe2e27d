# Study baseline (ViT): a small plain ViT on a 2k-image Fashion-MNIST subset,
# written like a model-zoo config (no augsub_mm in it): the model
# (_base_/models/vit-tiny-p4.py) plus the over-fitting regime's data and
# schedule. Its AugSub variants inherit it and add the four switch-on lines.
_base_ = ['./_base_/models/vit-tiny-p4.py', './_base_/fashion-mnist-study.py']
