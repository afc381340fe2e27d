# AugMask (ratio 0.5) in the model zoo's FSDP recipe of the MAE fine-tune of
# ViT-H/14 (FlexibleRunner, FSDPStrategy with its size-based wrap policy, AMP):
# the zoo config plus the switch. Under FlexibleRunner the wrapper goes in
# the strategy: AugSubFSDPStrategy merges onto the zoo's strategy (its
# auto_wrap_policy is kept) and wraps the model in
# AugSubFullyShardedDataParallel; it saves full checkpoints (a plain
# classifier) instead of FSDP's per-rank shards.
_base_ = 'mmpretrain::mae/benchmarks/vit-huge-p14_8xb128-fsdp-coslr-50e_in1k.py'

custom_imports = dict(imports=['augsub_mm'], allow_failed_imports=False)
model = dict(type='AugSubClassifier', augsub=dict(type='AugMask', ratio=0.5))
strategy = dict(type='AugSubFSDPStrategy')
randomness = dict(diff_rank_seed=True)
