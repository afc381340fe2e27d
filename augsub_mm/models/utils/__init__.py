from .masking import (block_mask, drop_tokens, expand_block_mask,
                      mask_input_patches, num_kept, random_keep_indices)

__all__ = ['block_mask', 'drop_tokens', 'expand_block_mask',
           'mask_input_patches', 'num_kept', 'random_keep_indices']
