from .augsub_optim_wrapper_constructor import AugSubOptimWrapperConstructor

__all__ = ['AugSubOptimWrapperConstructor']
