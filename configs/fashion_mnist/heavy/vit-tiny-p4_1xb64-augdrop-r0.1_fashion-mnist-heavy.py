# Heavy-augmentation regime, AugDrop ratio sweep (0.1 / 0.2 / 0.3): the sub
# forward runs with dropout 0.1 in the blocks' projection and MLP dropout
# layers. The study driver trains every ratio at seed 0, picks the ratio
# with the best top-1 on held-out training images (not the test set), and
# trains that ratio at the other seeds; all ratios are reported.
_base_ = './vit-tiny-p4_1xb64_fashion-mnist-heavy.py'

custom_imports = dict(imports=['augsub_mm'], allow_failed_imports=False)
model = dict(type='AugSubClassifier', augsub=dict(type='AugDrop', ratio=0.1))
model_wrapper_cfg = dict(type='AugSubDistributedDataParallel')
randomness = dict(diff_rank_seed=True)
