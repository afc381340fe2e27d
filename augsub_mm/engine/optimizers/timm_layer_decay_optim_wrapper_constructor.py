from typing import Callable, List, Optional, Tuple

import torch.nn as nn
from mmpretrain.engine.optimizers import \
    LearningRateDecayOptimWrapperConstructor
from mmpretrain.registry import OPTIM_WRAPPER_CONSTRUCTORS

#: Where MMPretrain's classifiers keep a timm model: TimmClassifier's
#: ``model``, and TIMMBackbone's ``timm_model`` inside an ImageClassifier.
TIMM_MODEL_PATHS = ('model', 'backbone.timm_model')


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class TimmLayerDecayOptimWrapperConstructor(
        LearningRateDecayOptimWrapperConstructor):
    """MMPretrain's layer-wise lr decay for the timm models MMPretrain
    builds (``TimmClassifier``, ``TIMMBackbone``), with or without AugSub.

    ``LearningRateDecayOptimWrapperConstructor`` (the MAE / BEiT fine-tune
    recipes' constructor) asks the model for ``get_layer_depth``, which
    MMPretrain's own ViTs have and ``TimmClassifier`` / ``TIMMBackbone``
    have not. This constructor is that one, ``paramwise_cfg`` and all, with
    the layers timm itself groups for layer decay (the model's
    ``group_matcher(coarse=False)``, as timm's ``train.py --layer-decay``
    reads it): for a ViT of L blocks, the stem (class token, position
    embedding, patch embedding) is layer 0, block i is layer i + 1 (the
    final norm goes with the last block), the head layer L + 1. A parameter
    of layer i gets ``lr * layer_decay_rate ** (L + 1 - i)``. An
    ImageClassifier's neck and head, outside its TIMMBackbone, are one layer
    above the timm model's top.
    AugSub's mask token is placed with the patch embedding by
    ``AugSubOptimWrapperConstructor``, which the switch puts over this one.

    Examples:
        >>> optim_wrapper = dict(
        ...     optimizer=dict(type='AdamW', lr=5e-4, weight_decay=0.05),
        ...     constructor='TimmLayerDecayOptimWrapperConstructor',
        ...     paramwise_cfg=dict(layer_decay_rate=0.75,
        ...                        flat_decay_mult=0.0))
    """

    def add_params(self, params: List[dict], module: nn.Module,
                   prefix: str = '',
                   get_layer_depth: Optional[Callable] = None,
                   **kwargs) -> None:
        if prefix == '' and get_layer_depth is None:
            get_layer_depth = timm_layer_depth(module)
        super().add_params(params, module, prefix=prefix,
                           get_layer_depth=get_layer_depth, **kwargs)


def _attribute(module: nn.Module, path: str) -> Optional[nn.Module]:
    for name in path.split('.'):
        module = getattr(module, name, None)
    return module


def timm_layer_depth(model: nn.Module
                     ) -> Callable[[str], Tuple[int, int]]:
    """``get_layer_depth(param_name) -> (layer_id, num_layers)`` of the
    timm model inside ``model``, from timm's own layer grouping."""
    for path in TIMM_MODEL_PATHS:
        inner = _attribute(model, path)
        if isinstance(inner, nn.Module) and \
                type(inner).__module__.startswith('timm.'):
            break
    else:
        raise TypeError(
            f'TimmLayerDecayOptimWrapperConstructor found no timm model in '
            f'{type(model).__name__} (it looks at TimmClassifier.model and '
            "an ImageClassifier's TIMMBackbone). For MMPretrain's own "
            "backbones use constructor='LearningRateDecayOptimWrapperConstru"
            "ctor'.")
    if not hasattr(inner, 'group_matcher'):
        raise TypeError(
            f'The timm model {type(inner).__name__} has no group_matcher, '
            'the layer grouping timm uses for layer-wise lr decay (a '
            "features_only TIMMBackbone has none): drop layer_decay_rate or "
            'use the classification model.')
    from timm.models import group_parameters
    layers = group_parameters(inner, inner.group_matcher(coarse=False),
                              reverse=True)
    num_layers = max(layers.values()) + 1
    if path != 'model':
        # The classifier's own neck and head: one layer above the timm
        # model's top (its final norm, where it is built without a head).
        num_layers += 1
    start = path + '.'

    def get_layer_depth(param_name: str) -> Tuple[int, int]:
        # FSDP's flattened units insert this into the names.
        name = param_name.replace('_fsdp_wrapped_module.', '')
        if name.startswith(start):
            layer = layers.get(name[len(start):], num_layers - 1)
        else:
            layer = num_layers - 1
        return layer, num_layers

    return get_layer_depth
