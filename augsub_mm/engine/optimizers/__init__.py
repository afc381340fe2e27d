from .augsub_optim_wrapper_constructor import AugSubOptimWrapperConstructor
from .timm_layer_decay_optim_wrapper_constructor import \
    TimmLayerDecayOptimWrapperConstructor

__all__ = ['AugSubOptimWrapperConstructor',
           'TimmLayerDecayOptimWrapperConstructor']
