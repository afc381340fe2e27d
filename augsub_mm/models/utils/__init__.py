from .masking import (block_mask, drop_tokens, expand_block_mask,
                      mask_input_patches, num_kept, random_keep_indices)
from .rng import seeded_stream, sub_pass_seed

__all__ = ['block_mask', 'drop_tokens', 'expand_block_mask',
           'mask_input_patches', 'num_kept', 'random_keep_indices',
           'seeded_stream', 'sub_pass_seed']
