# Fashion-MNIST (60k train / 10k test, 28x28 grey, 10 classes) through
# MMPretrain's FashionMNIST dataset, for the demo and the study.
# Data: Debian's `dataset-fashion-mnist`, un-gzipped into data/fashion_mnist
# by augsub_mm.utils.prepare_fashion_mnist (tools/run_demo.sh and the study
# driver call it). To use another folder: --cfg-options
# train_dataloader.dataset.data_root=DIR val_dataloader.dataset.data_root=DIR
# test_dataloader.dataset.data_root=DIR
data_root = 'data/fashion_mnist'

train_pipeline = [
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [dict(type='PackInputs')]

train_dataloader = dict(
    batch_size=64,
    num_workers=0,
    dataset=dict(
        type='FashionMNIST',
        data_root=data_root,
        split='train',
        download=False,
        pipeline=train_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=True))
# NOTE: mmpretrain 1.2.0's MNIST datasets choose their files by `test_mode`,
# not by `split`: without test_mode=True, split='test' loads the 60k
# training images.
val_dataloader = dict(
    batch_size=500,
    num_workers=0,
    dataset=dict(
        type='FashionMNIST',
        data_root=data_root,
        split='test',
        test_mode=True,
        download=False,
        pipeline=test_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False))
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_dataloader = val_dataloader
test_evaluator = val_evaluator
