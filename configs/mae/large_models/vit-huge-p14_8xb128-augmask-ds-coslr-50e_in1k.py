# AugMask (ratio 0.5) in the model zoo's DeepSpeed recipe of the MAE
# fine-tune of ViT-H/14 (FlexibleRunner, DeepSpeedStrategy, ZeRO-1, fp16): the
# zoo config plus the switch. AugSubDeepSpeedStrategy merges onto the zoo's
# strategy (ZeRO and fp16 settings kept) and runs the AugSub step through
# the engine. Needs DeepSpeed installed (pip install deepspeed).
_base_ = 'mmpretrain::mae/benchmarks/vit-huge-p14_8xb128-ds-coslr-50e_in1k.py'

custom_imports = dict(imports=['augsub_mm'], allow_failed_imports=False)
model = dict(type='AugSubClassifier', augsub=dict(type='AugMask', ratio=0.5))
strategy = dict(type='AugSubDeepSpeedStrategy')
randomness = dict(diff_rank_seed=True)
