from .three_augment import ThreeAugment

__all__ = ['ThreeAugment']
