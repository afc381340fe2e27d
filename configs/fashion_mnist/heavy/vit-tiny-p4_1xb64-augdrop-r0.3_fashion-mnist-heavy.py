# Heavy-augmentation regime, AugDrop ratio sweep: dropout 0.3 in the sub
# forward (see vit-tiny-p4_1xb64-augdrop-r0.1_fashion-mnist-heavy.py).
_base_ = './vit-tiny-p4_1xb64-augdrop-r0.1_fashion-mnist-heavy.py'

model = dict(augsub=dict(ratio=0.3))
