# Data, schedule and runtime of the study's second regime, heavy
# augmentation (tools/study/run_study.py --regime heavy): the paper's claims
# are made for ImageNet recipes whose augmentation is so heavy that the
# main model under-fits. Here: RandAugment, Mixup 0.8 + CutMix 1.0 with
# soft targets (set on the model, in heavy/*.py: `model` is the model
# base's key), ten times the training images of the over-fitting regime and
# a short schedule. Everything else (optimizer, lr, batch, clipping, logging)
# is the over-fitting regime's, inherited.
_base_ = ['./fashion-mnist-study.py']

# NOTE: the first 20000 of the 60k training images (10x the over-fitting
# regime), 8 epochs (2504 iterations of 64), validated after every epoch:
# sized so that the whole regime (23 runs: ViT baseline / AugMask / AugPath
# x 3 seeds, AugDrop 0.1 / 0.2 / 0.3 at seed 0 and the chosen ratio at seeds
# 1, 2; ResNet baseline / AugMask / AugPath x 3 seeds) trains in under 2
# hours with `run_study.py --regime heavy --jobs 2` on 2 free cores.
# Measured 2026-11-30 with tools/study/time_iters.py (batch 64, one torch
# thread, after 10 warm-up iterations) while other jobs loaded the 2 cores
# (load average 5-6), CPU-seconds per iteration, 100 iterations each:
#   ViT    baseline 0.206, AugMask 0.303, AugPath 0.329, AugDrop 0.2 0.455
#   ResNet baseline 0.345, AugMask 0.607, AugPath 0.577
# and, back to back (60 iterations each), this regime's baseline against
# the over-fitting regime's: ViT 0.214 vs 0.204, ResNet 0.311 vs 0.334.
# So an iteration costs what it costs in the over-fitting regime
# (RandAugment and Mixup/CutMix add little at 28 px), whose runs were
# measured in full on this machine (results/fashion_mnist/runs: 1920
# iterations + 6 validations, CPU-s per run: ViT 209 / 337 / 307 / 484
# (baseline / AugMask / AugPath / AugDrop), ResNet 234 / 409 / 386), i.e.
# about 0.095 / 0.161 / 0.146 / 0.238 and 0.092 / 0.184 / 0.172 CPU-s per
# training iteration on free cores (the load above inflates CPU time
# about 2x). Estimate: 2504 iterations x 3.74 CPU-s (one iteration of
# each of the 23 runs) x 1.05 (augmentation) = 9830 CPU-s, plus 8
# validations per run (1190), start-up (350) and the sweep's held-out
# scoring (30): about 190 CPU-minutes, about 95 minutes with --jobs 2 on 2
# free cores, about 105 with the runs' start-up and the last run alone
# (the over-fitting regime: 166 CPU-minutes took about 90 minutes).
num_train = 20000
max_epochs = 8

# RandAugment as in the paper's fine-tuning and RSB recipes (2 ops, m9,
# mstd 0.5, timm's increasing policies) without the four ops that need a
# colour image: mmcv's AutoContrast, Equalize, Contrast and ColorTransform
# raise on 1-channel images (checked on 28x28 Fashion-MNIST, 2026-11-30).
# Fill value 0: the images' black background. (Our ThreeAugment is the
# DeiT-III alternative; on grey images its grayscale branch is the identity,
# which leaves solarize or blur: weaker than RandAugment, so not used.)
rand_increasing_grey = [
    dict(type='Invert'),
    dict(type='Rotate', magnitude_range=(0, 30)),
    dict(type='Posterize', magnitude_range=(4, 0)),
    dict(type='Solarize', magnitude_range=(256, 0)),
    dict(type='SolarizeAdd', magnitude_range=(0, 110)),
    dict(type='Brightness', magnitude_range=(0, 0.9)),
    dict(type='Sharpness', magnitude_range=(0, 0.9)),
    dict(type='Shear', magnitude_range=(0, 0.3), direction='horizontal'),
    dict(type='Shear', magnitude_range=(0, 0.3), direction='vertical'),
    dict(type='Translate', magnitude_range=(0, 0.45),
         direction='horizontal'),
    dict(type='Translate', magnitude_range=(0, 0.45), direction='vertical'),
]
train_pipeline = [
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='RandAugment', policies=rand_increasing_grey, num_policies=2,
         total_level=10, magnitude_level=9, magnitude_std=0.5,
         hparams=dict(pad_val=0)),
    dict(type='PackInputs'),
]
train_dataloader = dict(
    dataset=dict(indices=num_train, pipeline=train_pipeline))

param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=True, begin=0, end=1,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=1, end=max_epochs,
         eta_min=1e-5, convert_to_iter_based=True),
]
train_cfg = dict(by_epoch=True, max_epochs=max_epochs, val_interval=1)
