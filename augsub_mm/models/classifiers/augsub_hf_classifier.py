"""AugSub for ``HuggingFaceClassifier``: a transformers vision model
(``AutoModelForImageClassification``) trained with a sub-model.

MMPretrain's ``HuggingFaceClassifier`` holds one transformers model
(``self.model``) and a loss module; a score is ``self.model(x).logits``.
:class:`AugSubHuggingFaceClassifier` trains it with the step of
:class:`AugSubClassifier` (:class:`AugSubStep`); the family adapters of
:mod:`augsub_mm.models.families.hf` decide what each sub-model does to it.
The model is built from a source found OFFLINE only (a local directory or
``config.json``, or a model already in the local Hugging Face cache):
augsub_mm never downloads.
"""
from typing import Optional, Union

from mmpretrain.models import HuggingFaceClassifier
from mmpretrain.registry import MODELS

from ..submodels import BaseSubModel
from .augsub_timm_classifier import (HF_REFUSAL, NO_TRANSFORMERS,
                                     ModelSourceStep)

#: Arguments of the classifiers that are not AutoConfig's.
NOT_CONFIG = ('model_name', 'pretrained', 'loss', 'train_cfg', 'with_cp',
              'data_preprocessor', 'init_cfg', 'augsub', 'sub_loss',
              'step_mode', 'sub_bn_stats', 'type', '_scope_')


def transformers_installed() -> bool:
    try:
        import transformers  # noqa: F401
    except ImportError:
        return False
    return True


def offline_hf_config(model_name, kwargs: Optional[dict] = None):
    """The transformers config of ``model_name`` if it can be read without
    the network (a local directory with ``config.json``, a config file, or
    a model in the local Hugging Face cache), else None."""
    if not isinstance(model_name, str) or not transformers_installed():
        return None
    from transformers import AutoConfig
    # AutoConfig's arguments: what HuggingFaceClassifier passes it.
    kwargs = {k: v for k, v in (kwargs or {}).items() if k not in NOT_CONFIG}
    kwargs['local_files_only'] = True
    try:
        return AutoConfig.from_pretrained(model_name, **kwargs)
    except (OSError, ValueError, KeyError, TypeError):
        return None


@MODELS.register_module()
class AugSubHuggingFaceClassifier(ModelSourceStep,
                                  HuggingFaceClassifier):
    """``HuggingFaceClassifier`` trained with an augmented sub-model.

    Built by the README's four lines merged onto a HuggingFaceClassifier
    config, by ``tools/train.py --augsub`` (``enable_augsub``), or by its
    type. Validation, test and the state dict are HuggingFaceClassifier's:
    a checkpoint is a transformers state dict, plus ``augsub.mask_token``
    where AugMask uses one.

    Args:
        augsub, sub_loss, step_mode, sub_bn_stats: As for
            :class:`AugSubClassifier`.
        *args, **kwargs: HuggingFaceClassifier's (``model_name``: a local
            directory or config file, or a model in the local cache;
            ``pretrained``, ``loss``, ``with_cp``, ``data_preprocessor``,
            and every ``AutoConfig.from_pretrained`` argument).
    """

    def __init__(self, model_name, pretrained=False, *args,
                 augsub: Union[dict, BaseSubModel] = None,
                 sub_loss: Optional[dict] = None,
                 step_mode: str = 'two_pass',
                 sub_bn_stats: str = 'update',
                 **kwargs):
        if not transformers_installed():
            raise ValueError(HF_REFUSAL.format(what=repr(model_name),
                                               why=NO_TRANSFORMERS))
        if not args and offline_hf_config(model_name, kwargs) is None:
            raise ValueError(HF_REFUSAL.format(
                what=repr(model_name),
                why='its config cannot be read offline (augsub_mm never '
                'downloads): save the model or its config with '
                'save_pretrained() or `hf download` and set model_name to '
                'that local directory'))
        super().__init__(model_name, pretrained, *args, **kwargs)
        self.init_augsub(augsub, sub_loss, step_mode, sub_bn_stats,
                         self.loss_module)

    def _scores(self, inputs):
        return self.model(inputs).logits
