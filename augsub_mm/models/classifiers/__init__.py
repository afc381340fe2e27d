from .augsub_classifier import AugSubClassifier

__all__ = ['AugSubClassifier']
