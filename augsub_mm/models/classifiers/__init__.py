from .augsub_classifier import AugSubClassifier
from .augsub_hf_classifier import AugSubHuggingFaceClassifier
from .augsub_timm_classifier import AugSubTimmClassifier

__all__ = ['AugSubClassifier', 'AugSubTimmClassifier',
           'AugSubHuggingFaceClassifier']
