"""AugSub for ``TimmClassifier``: a timm model trained with a sub-model.

MMPretrain's ``TimmClassifier`` holds one timm model (``self.model``) and a
loss module, no backbone / neck / head. :class:`AugSubTimmClassifier`
trains it with the same step as :class:`AugSubClassifier`
(:class:`~augsub_mm.models.classifiers.augsub_classifier.AugSubStep`:
losses, soft target, one optimizer step, wrappers, strategies, compile,
AMP); only the branches differ: a score is ``self.model(x)``.
"""
import re
from collections import OrderedDict
from typing import Optional, Union

import torch.nn as nn
from mmpretrain.models import TimmClassifier
from mmpretrain.registry import MODELS

from ..submodels import BaseSubModel
from .augsub_classifier import AugSubStep

#: Keys of the sub-model's own state (the mask token): not the timm
#: model's, so TimmClassifier's ``model.`` prefix is not theirs either.
SUBMODEL_PREFIX = 'augsub.'


class ModelSourceStep(AugSubStep):
    """AugSubStep for classifiers whose whole network is one model from
    another library in ``self.model`` (TimmClassifier's timm model,
    HuggingFaceClassifier's transformers model): the sub-model runs
    through it, and its scores are :meth:`_scores`. Both classifiers add
    ``model.`` to every key they load and remove it from every key they
    save; the sub-model's keys stay the classifier's own, as in
    AugSubClassifier."""

    @property
    def backbone(self) -> nn.Module:
        """The network the sub-model runs through: ``self.model``."""
        return self.model

    def _scores(self, inputs):
        raise NotImplementedError

    def _main_branch(self, inputs, data_samples):
        cls_score = self._scores(inputs)
        return self._get_loss(cls_score, data_samples), cls_score.detach()

    def _sub_branch(self, inputs, teacher):
        sub_score = self._scores(inputs)
        # Once, before any backward: a sub pass that applied the sub-model
        # nowhere would train a copy of the main pass.
        self.augsub.check_acted(self.model)
        return dict(loss_sub=self.sub_loss(sub_score, teacher))

    @staticmethod
    def _add_state_dict_prefix(state_dict, prefix, local_metadata, strict,
                               missing_keys, unexpected_keys, error_msgs):
        for key in list(state_dict.keys()):
            if key.startswith(prefix) and not key.startswith(
                    prefix + SUBMODEL_PREFIX):
                state_dict[re.sub(f'^{re.escape(prefix)}', prefix + 'model.',
                                  key)] = state_dict.pop(key)

    @staticmethod
    def _remove_state_dict_prefix(self, state_dict, prefix, local_metadata):
        return OrderedDict(
            (re.sub(f'^{re.escape(prefix)}model\\.', prefix, k), v)
            for k, v in state_dict.items())


@MODELS.register_module()
class AugSubTimmClassifier(ModelSourceStep, TimmClassifier):
    """``TimmClassifier`` trained with an augmented sub-model (AugSub).

    The switch is the same as for ``ImageClassifier``: the README's four
    lines (``type='AugSubClassifier'`` merged onto a ``TimmClassifier``
    config) and ``tools/train.py --augsub`` build this class. The timm
    model's family adapter (:mod:`augsub_mm.models.families.timm`) decides
    what each sub-model does to it. Validation, test and the state dict are
    TimmClassifier's: a checkpoint is a timm state dict, plus
    ``augsub.mask_token`` where AugMask uses one (which
    ``tools/model_converters/augsub_to_mmpretrain.py`` removes).

    Args:
        augsub (dict | BaseSubModel): The sub-model, e.g.
            ``dict(type='AugMask', ratio=0.5)``.
        sub_loss (dict, optional): Defaults to ``dict(type='AugSubLoss')``,
            which follows ``loss``.
        step_mode (str): ``'two_pass'`` or ``'joint'``, as for
            :class:`AugSubClassifier`. Defaults to ``'two_pass'``.
        sub_bn_stats (str): ``'update'`` or ``'frozen'``, as for
            :class:`AugSubClassifier`. Defaults to ``'update'``.
        *args, **kwargs: TimmClassifier's (``model_name``, ``pretrained``,
            ``checkpoint_path``, ``loss``, ``with_cp``, ``data_preprocessor``,
            and every ``timm.create_model`` argument).

    Examples:
        >>> import augsub_mm  # noqa: F401
        >>> from mmpretrain.registry import MODELS
        >>> model = MODELS.build(dict(
        ...     type='AugSubClassifier',  # the switch; a TimmClassifier config
        ...     model_name='vit_tiny_patch16_224', pretrained=False,
        ...     img_size=32, depth=2, num_classes=10,
        ...     augsub=dict(type='AugMask', ratio=0.5)))
        >>> type(model).__name__, model.augsub.describe(model.backbone)
        ('AugSubTimmClassifier', 'token drop')
    """

    def __init__(self, *args,
                 augsub: Union[dict, BaseSubModel] = None,
                 sub_loss: Optional[dict] = None,
                 step_mode: str = 'two_pass',
                 sub_bn_stats: str = 'update',
                 **kwargs):
        super().__init__(*args, **kwargs)
        self.init_augsub(augsub, sub_loss, step_mode, sub_bn_stats,
                         self.loss_module)

    def _scores(self, inputs):
        return self.model(inputs)


def is_timm_name(model_name) -> bool:
    """Whether ``timm.create_model`` takes ``model_name`` (an architecture
    or a ``hf-hub:`` / ``local-dir:`` source)."""
    if not isinstance(model_name, str):
        return False
    if model_name.split(':')[0] in ('hf-hub', 'hf_hub', 'local-dir'):
        return True
    try:
        import timm
    except ImportError:
        return False
    return timm.is_model(model_name)


#: Why a HuggingFaceClassifier config is refused ({what}, {why}).
HF_REFUSAL = (
    'AugSub does not train the HuggingFaceClassifier model {what}: {why}. '
    'Use the timm or MMPretrain build of the architecture instead '
    "(TimmClassifier with model_name='vit_base_patch16_224', or an "
    'ImageClassifier config), whose adapters are exact.')
NO_TRANSFORMERS = ('transformers is not installed (pip install '
                   "'augsub_mm[hf]'), and augsub_mm adapts transformers "
                   'ViT / DeiT, Swin and CNN models only through it')


def model_source_classifier(**kwargs) -> nn.Module:
    """The AugSub classifier for a config with ``model_name`` and no
    backbone (TimmClassifier's or HuggingFaceClassifier's arguments): a
    timm model, or a transformers model whose config is found offline."""
    name = kwargs['model_name']
    if is_timm_name(name):
        return AugSubTimmClassifier(**kwargs)
    from .augsub_hf_classifier import (AugSubHuggingFaceClassifier,
                                       offline_hf_config,
                                       transformers_installed)
    if offline_hf_config(name, kwargs) is not None:
        return AugSubHuggingFaceClassifier(**kwargs)
    hints = []
    try:
        import timm  # noqa: F401
    except ImportError:
        hints.append(" If it is a timm model, install timm (pip install "
                     "'augsub_mm[timm]').")
    why = NO_TRANSFORMERS if not transformers_installed() else (
        'no transformers config of that name is found offline (a local '
        'directory with config.json, a config file, or a model in the local '
        'Hugging Face cache; augsub_mm never downloads: save_pretrained() '
        'or `hf download` it and set model_name to the directory)')
    raise TypeError(
        f'AugSubClassifier got model_name={name!r} and no backbone, and '
        f'{name!r} is not a timm architecture (timm.is_model) or an '
        "'hf-hub:' / 'local-dir:' timm source. If the config is a "
        'HuggingFaceClassifier\'s: '
        + HF_REFUSAL.format(what=repr(name), why=why) + ''.join(hints))
