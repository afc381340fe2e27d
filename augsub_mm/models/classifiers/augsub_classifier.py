from contextlib import nullcontext
from typing import Dict, List, Optional, Union

import torch
import torch.nn as nn
from mmengine.dist import get_world_size
from mmengine.optim import OptimWrapper
from mmpretrain.models import ImageClassifier
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

from ..submodels import BaseSubModel

STEP_MODES = ('two_pass', 'joint')
SUB_MODELS = ('AugMask', 'AugDrop', 'AugPath')

WRAPPER_HINT = ("model_wrapper_cfg = dict(type='AugSubDistributedDataParallel')"
                ' (and custom_imports = dict(imports=[\'augsub_mm\']))')


@MODELS.register_module()
class AugSubClassifier(ImageClassifier):
    """Image classifier trained with an augmented sub-model (AugSub).

    From `Augmenting Sub-model to Improve Main Model
    <https://arxiv.org/abs/2306.11339>`_ (MaskSub, CVPR 2025). Each training
    iteration runs the main model on the (Mixup/CutMix-ed) batch against the
    labels, and the same network under extra regularization (``augsub``)
    against the main model's detached prediction; both losses are weighted
    1/2 and one optimizer step is taken. Everything else -- validation, test,
    ``predict`` and ``tensor`` modes, the state dict -- is that of
    :class:`ImageClassifier`, so a trained checkpoint is a plain classifier.

    Args:
        augsub (dict | BaseSubModel): The sub-model, e.g.
            ``dict(type='AugMask', ratio=0.5)``; one of ``AugMask``,
            ``AugDrop``, ``AugPath``.
        sub_loss (dict, optional): Loss of the sub-model. Defaults to
            ``dict(type='AugSubLoss')``, whose soft target (softmax or
            sigmoid) and weight follow the head's loss.
        step_mode (str): ``'two_pass'`` backpropagates the main loss before
            the sub forward, so that peak memory stays that of normal
            training; ``'joint'`` does one backward of (main + sub) / 2 over
            both graphs. Same gradient. Defaults to ``'two_pass'``.
        **kwargs: The arguments of :class:`ImageClassifier` (backbone, neck,
            head, data_preprocessor, train_cfg, ...).

    Examples:
        >>> import torch
        >>> import augsub_mm  # noqa: F401
        >>> from mmpretrain.registry import MODELS
        >>> model = MODELS.build(dict(
        ...     type='AugSubClassifier',
        ...     augsub=dict(type='AugMask', ratio=0.5),
        ...     backbone=dict(type='VisionTransformer', arch=dict(
        ...         embed_dims=32, num_layers=2, num_heads=2,
        ...         feedforward_channels=64), img_size=32, patch_size=8),
        ...     head=dict(type='VisionTransformerClsHead', num_classes=10,
        ...               in_channels=32)))
        >>> model(torch.rand(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """

    def __init__(self,
                 backbone: dict,
                 augsub: Union[dict, BaseSubModel] = None,
                 sub_loss: Optional[dict] = None,
                 step_mode: str = 'two_pass',
                 **kwargs):
        super().__init__(backbone, **kwargs)
        if step_mode not in STEP_MODES:
            raise ValueError(f'Unsupported step_mode {step_mode!r}, please '
                             f'choose from {STEP_MODES}.')
        self.step_mode = step_mode
        if self.head is None or not hasattr(self.head, '_get_loss'):
            raise TypeError(
                'AugSubClassifier needs a classification head of the ClsHead '
                f'family (with `_get_loss`), got {type(self.head).__name__}.')
        self.augsub = build_submodel(augsub)
        self.augsub.bind(self.backbone)
        if not isinstance(sub_loss, nn.Module):
            sub_loss = MODELS.build(sub_loss or dict(type='AugSubLoss'))
        sub_loss.match_head_loss(self.head.loss_module)
        self.sub_loss = sub_loss

    # -- forward --------------------------------------------------------
    def forward(self,
                inputs: torch.Tensor,
                data_samples: Optional[List[DataSample]] = None,
                mode: str = 'tensor',
                teacher: Optional[torch.Tensor] = None):
        """ImageClassifier's forward, plus the branches of the AugSub step.

        The extra modes exist so that the training step can run each branch
        through a DDP wrapper's forward (which the reducer needs):
        ``'augsub_main'`` returns the main losses and the detached main
        logits, ``'augsub_sub'`` the sub loss against ``teacher``,
        ``'augsub_joint'`` both.
        """
        if mode == 'augsub_main':
            return self._main_branch(inputs, data_samples)
        if mode == 'augsub_sub':
            return self._sub_branch(inputs, teacher)
        if mode == 'augsub_joint':
            main_losses, teacher = self._main_branch(inputs, data_samples)
            return main_losses, self._sub_branch(inputs, teacher)
        return super().forward(inputs, data_samples, mode)

    def _main_branch(self, inputs, data_samples):
        cls_score = self.head(self.extract_feat(inputs))
        return self.head._get_loss(cls_score, data_samples), cls_score.detach()

    def _sub_branch(self, inputs, teacher):
        with self.augsub.engage(self.backbone):
            sub_score = self.head(self.extract_feat(inputs))
        return dict(loss_sub=self.sub_loss(sub_score, teacher))

    def loss(self, inputs: torch.Tensor,
             data_samples: List[DataSample]) -> dict:
        if self.training and get_world_size() > 1:
            # mmengine's MMDistributedDataParallel.train_step calls this
            # directly and would train without the sub-model, silently.
            raise RuntimeError(
                'AugSubClassifier is wrapped by a DDP wrapper that does not '
                'run the sub-model. Add to your config: ' + WRAPPER_HINT)
        return super().loss(inputs, data_samples)

    # -- training step --------------------------------------------------
    def train_step(self, data: Union[dict, tuple, list],
                   optim_wrapper: OptimWrapper) -> Dict[str, torch.Tensor]:
        return self.augsub_train_step(self, data, optim_wrapper)

    def augsub_train_step(self, model: nn.Module, data: Union[dict, tuple,
                                                              list],
                          optim_wrapper: OptimWrapper
                          ) -> Dict[str, torch.Tensor]:
        """One AugSub iteration, shared by single-process and DDP training.

        Args:
            model (nn.Module): ``self``, or the DDP wrapper around it; every
                forward goes through it so that DDP all-reduces gradients.
            data: A batch from the dataloader.
            optim_wrapper (OptimWrapper): Any mmengine optimizer wrapper
                (gradient accumulation and AMP included).

        Returns:
            dict: Log variables: ``loss`` (the main loss, as in a baseline
            run), ``loss_sub`` and whatever else the head reports.
        """
        with optim_wrapper.optim_context(model):
            # Once: Mixup/CutMix are drawn here and shared by both branches.
            data = self.data_preprocessor(data, True)
        inputs, data_samples = data['inputs'], data['data_samples']

        if self.step_mode == 'joint':
            with optim_wrapper.optim_context(model):
                main_losses, sub_losses = model(
                    inputs, data_samples, mode='augsub_joint')
            main_loss, log_vars = self.parse_losses(main_losses)
            sub_loss, sub_vars = self.parse_losses(sub_losses)
            optim_wrapper.update_params((main_loss + sub_loss) / 2)
        else:
            # Pass 1 only accumulates gradients locally: DDP all-reduces
            # once, in pass 2, the summed gradient. Backpropagating here
            # frees the main graph before the sub forward.
            no_sync = getattr(model, 'no_sync', nullcontext)
            with no_sync(), optim_wrapper.optim_context(model):
                main_losses, teacher = model(
                    inputs, data_samples, mode='augsub_main')
            main_loss, log_vars = self.parse_losses(main_losses)
            _backward_uncounted(optim_wrapper, main_loss / 2)
            with optim_wrapper.optim_context(model):
                sub_losses = model(inputs, teacher=teacher, mode='augsub_sub')
            sub_loss, sub_vars = self.parse_losses(sub_losses)
            optim_wrapper.update_params(sub_loss / 2)
        log_vars.update((k, v) for k, v in sub_vars.items() if k != 'loss')
        return log_vars


def _backward_uncounted(optim_wrapper: OptimWrapper,
                        loss: torch.Tensor) -> None:
    """Backward through the wrapper (loss scaling for accumulation and AMP
    included) without counting an iteration: ``OptimWrapper.backward`` adds
    one to its counter per call, and the Runner, gradient accumulation and
    resume expect one count per iteration, which pass 2's ``update_params``
    takes."""
    optim_wrapper.backward(optim_wrapper.scale_loss(loss))
    optim_wrapper._inner_count -= 1


def build_submodel(augsub: Union[dict, BaseSubModel, None]) -> BaseSubModel:
    """Build ``augsub`` with errors that say what to write instead."""
    if augsub is None:
        raise ValueError(
            "AugSubClassifier needs augsub=dict(type=..., ratio=...), type "
            f'one of {SUB_MODELS}. For a baseline, use ImageClassifier.')
    if isinstance(augsub, BaseSubModel):
        return augsub
    if not isinstance(augsub, dict) or 'type' not in augsub:
        raise TypeError(f'augsub must be a dict with a type, one of '
                        f'{SUB_MODELS}; got {augsub!r}.')
    kind = augsub['type']
    cls = MODELS.get(kind) if isinstance(kind, str) else kind
    if not (isinstance(cls, type) and issubclass(cls, BaseSubModel)):
        raise ValueError(f'Unknown sub-model type {kind!r}: choose from '
                         f'{SUB_MODELS}.')
    return MODELS.build(augsub)
