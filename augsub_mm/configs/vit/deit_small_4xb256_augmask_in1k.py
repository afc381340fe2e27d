# AugMask (ratio 0.5, token dropping) on the DeiT-S recipe, new style.
from mmengine.config import read_base

with read_base():
    from .deit_small_4xb256_in1k import *

from augsub_mm.models import AugMask, AugSubClassifier

model.update(type=AugSubClassifier, augsub=dict(type=AugMask, ratio=0.5))
# A string: mmengine 0.10.x looks wrappers up by name.
model_wrapper_cfg = dict(type='AugSubDistributedDataParallel')
randomness.update(diff_rank_seed=True)
