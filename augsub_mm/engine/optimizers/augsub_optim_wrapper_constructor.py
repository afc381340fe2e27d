from typing import Optional

import torch.nn as nn
from mmengine.optim import OptimWrapper
from mmpretrain.registry import OPTIM_WRAPPER_CONSTRUCTORS
from torch.optim import Optimizer


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class AugSubOptimWrapperConstructor:
    """The recipe's optimizer, with the sub-model's own parameters placed.

    From `Augmenting Sub-model to Improve Main Model
    <https://arxiv.org/abs/2306.11339>`_. AugMask on Swin learns a mask
    token that the paper excludes from weight decay. The token is 1-D, so a
    recipe with ``paramwise_cfg=dict(flat_decay_mult=0.0)`` (mmpretrain's
    Swin recipes) already does that without this constructor; this one does
    it for any recipe, and gives the token the learning rate of the patch
    embedding under layer-wise lr decay. This constructor builds
    the optimizer wrapper exactly as the recipe's constructor does (same
    ``paramwise_cfg``), then moves every parameter the sub-model declares
    (``model.augsub.param_group_anchors``) into a parameter group of its
    own with ``weight_decay=0`` and the other settings of the backbone
    module it belongs to: for the mask token, the patch embedding, so that
    layer-wise lr decay gives it the lr of layer 0. It then lets the
    sub-model check the result (``check_optimizer``). For models without
    such parameters it changes nothing.

    Args:
        optim_wrapper_cfg (dict): The optimizer wrapper config, as for
            ``DefaultOptimWrapperConstructor``; it may hold
            ``base_constructor`` (str): the recipe's constructor. Defaults
            to ``'DefaultOptimWrapperConstructor'``.
        paramwise_cfg (dict, optional): Passed to the base constructor
            unchanged. Defaults to None.

    Examples:
        In a config, on top of any recipe (a recipe that names its own
        constructor moves it to ``base_constructor``):

        >>> optim_wrapper = dict(
        ...     constructor='AugSubOptimWrapperConstructor',
        ...     base_constructor='LearningRateDecayOptimWrapperConstructor')
    """

    def __init__(self, optim_wrapper_cfg: dict,
                 paramwise_cfg: Optional[dict] = None):
        optim_wrapper_cfg = dict(optim_wrapper_cfg)
        base = optim_wrapper_cfg.pop('base_constructor',
                                     'DefaultOptimWrapperConstructor')
        if base in (type(self), type(self).__name__):
            raise ValueError(
                f'base_constructor must be the recipe\'s constructor, not '
                f'{type(self).__name__} itself.')
        self.base = OPTIM_WRAPPER_CONSTRUCTORS.build(
            dict(type=base, optim_wrapper_cfg=optim_wrapper_cfg,
                 paramwise_cfg=paramwise_cfg))

    def __call__(self, model: nn.Module) -> OptimWrapper:
        try:
            optim_wrapper = self.base(model)
        except NotImplementedError as error:
            # MMPretrain's layer-wise lr decay on a timm model.
            from .timm_layer_decay_optim_wrapper_constructor import \
                timm_layer_depth
            try:
                timm_layer_depth(getattr(model, 'module', model))
            except TypeError:
                raise error
            raise NotImplementedError(
                f'{error} The model holds a timm model: name '
                "constructor='TimmLayerDecayOptimWrapperConstructor' (the "
                'same paramwise_cfg; timm\'s own layer grouping) instead of '
                f'{type(self.base).__name__}.') from error
        model = getattr(model, 'module', model)  # a DDP wrapper
        submodel = getattr(model, 'augsub', None)
        if not hasattr(submodel, 'param_group_anchors'):
            return optim_wrapper
        optimizer = optim_wrapper.optimizer
        for param, anchor in submodel.param_group_anchors(model.backbone):
            move_to_own_group(optimizer, param, anchor, weight_decay=0.)
        if hasattr(submodel, 'check_optimizer'):
            submodel.check_optimizer(optimizer)
        return optim_wrapper


def move_to_own_group(optimizer: Optimizer, param: nn.Parameter,
                      anchor: nn.Module, **overrides) -> None:
    """Move ``param`` into a new parameter group of ``optimizer``.

    The group takes the settings (lr, layer-wise ``lr_scale``, betas, ...)
    of the group that holds ``anchor``'s first trainable parameter, or of
    ``param``'s own group if ``anchor`` has none in the optimizer, then
    ``overrides``. Call it before the first step and before any parameter
    scheduler is built: schedulers record every group's initial values.

    Args:
        optimizer (Optimizer): The optimizer; ``param`` must be in it.
        param (nn.Parameter): The parameter to move.
        anchor (nn.Module): The module whose settings ``param`` shares.
        **overrides: Settings of the new group, e.g. ``weight_decay=0.``.
    """

    def group_of(p):
        return next((g for g in optimizer.param_groups
                     if any(q is p for q in g['params'])), None)

    own = group_of(param)
    if own is None:
        raise ValueError('The parameter to move is not in the optimizer: '
                         'was it built from another model?')
    template = next((group_of(p) for p in anchor.parameters()
                     if group_of(p) is not None), own)
    settings = {k: v for k, v in template.items() if k != 'params'}
    if 'param_name' in settings:  # set by layer-wise lr decay, for logs
        settings['param_name'] = own.get('param_name', 'augsub parameter')
    own['params'] = [q for q in own['params'] if q is not param]
    if not own['params']:
        optimizer.param_groups.remove(own)
    optimizer.add_param_group(dict(settings, **overrides, params=[param]))
