# AugMask (ratio 0.5) on the Swin-T recipe, new style: the four lines.
# Swin's mask token is 1-D; the recipe's flat_decay_mult=0.0 keeps it out of
# weight decay.
from mmengine.config import read_base

with read_base():
    from .swin_tiny_16xb64_in1k import *

from augsub_mm.models import AugMask, AugSubClassifier

model.update(type=AugSubClassifier, augsub=dict(type=AugMask, ratio=0.5))
# A string: mmengine 0.10.x looks wrappers up by name.
model_wrapper_cfg = dict(type='AugSubDistributedDataParallel')
randomness.update(diff_rank_seed=True)
