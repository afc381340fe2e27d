from contextlib import contextmanager, nullcontext
from functools import partial
from typing import Callable, Dict, Iterator, List, Optional, Union

import torch
import torch.nn as nn
from mmengine.model.utils import detect_anomalous_params
from mmengine.optim import OptimWrapper
from mmpretrain.models import (ClsHead, ConformerHead, ImageClassifier,
                               MultiLabelClsHead, MultiTaskHead)
from mmpretrain.models.backbones import RevVisionTransformer
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample
from torch.nn.modules.batchnorm import _NormBase

from ..submodels import BaseSubModel
from ..utils.rng import seeded_stream, sub_pass_seed

STEP_MODES = ('two_pass', 'joint')
SUB_MODELS = ('AugMask', 'AugDrop', 'AugPath')
SUB_BN_STATS = ('update', 'frozen')
#: Every classification head of mmpretrain derives from one of these; the
#: heads of its self-supervised and multi-modal models do not.
CLASSIFICATION_HEADS = (ClsHead, MultiLabelClsHead)
FINE_TUNE_HINT = (
    'Switch AugSub on in an image classification config instead (e.g. '
    'from mmpretrain::deit3, swin_transformer, resnet); for an encoder '
    'pre-trained by a self-supervised algorithm, in its fine-tune '
    'config (e.g. mmpretrain::mae/benchmarks/'
    'vit-base-p16_8xb128-coslr-100e_in1k.py, or the benchmarks/ folder of '
    'the algorithm).')

WRAPPER_HINT = ("model_wrapper_cfg = dict(type='AugSubDistributedDataParallel')"
                ' (and custom_imports = dict(imports=[\'augsub_mm\'])); '
                "under FlexibleRunner, strategy = dict(type='AugSubDDPStrategy')"
                ' (AugSubFSDPStrategy, AugSubDeepSpeedStrategy, '
                'AugSubSingleDeviceStrategy for those engines)')
# Heads whose loss() is "score = self(feats); self._get_loss(score, ...)":
# the main branch computes the score once and reuses it as the teacher.
STANDARD_HEAD_LOSSES = (ClsHead.loss, MultiLabelClsHead.loss)
# Heads that return several scores and whose loss is the sum of the loss
# module over them (ConformerHead: its CNN and transformer branches): the
# sub loss is then the sum, over the scores, of the sub loss of each
# against the same score of the main pass, detached.
SUMMED_SCORE_LOSSES = (ConformerHead._get_loss, )


def checkpointing_module(module: nn.Module) -> Optional[str]:
    """Name of the first sub-module of ``module`` that recomputes its forward
    in the backward (``with_cp=True`` of mmpretrain's blocks, timm's
    ``set_grad_checkpointing()``, a forward wrapped by mmengine's
    ``activation_checkpointing``, or RevViT's reversible layers, which
    rebuild their activations from their outputs in a custom backward),
    else None."""
    for name, child in module.named_modules():
        # torch.compile's OptimizedModule also sets a forward of its own.
        wrapped_forward = 'forward' in vars(child) and \
            not hasattr(child, '_orig_mod')
        checkpointed = getattr(child, 'with_cp', False) is True or \
            getattr(child, 'grad_checkpointing', False) is True or \
            getattr(child, 'gradient_checkpointing', False) is True
        if checkpointed or wrapped_forward or (
                    isinstance(child, RevVisionTransformer)
                    and not child.no_custom_backward):
            return name or type(module).__name__
    return None


def _type_of(cfg) -> Optional[type]:
    """The class of a module config or module; None when it cannot be
    resolved (the build then raises its own error)."""
    if cfg is None or isinstance(cfg, nn.Module):
        return None if cfg is None else type(cfg)
    kind = cfg.get('type') if isinstance(cfg, dict) else None
    if isinstance(kind, str):
        return MODELS.get(kind)
    return kind if isinstance(kind, type) else None


def _type_name(cfg) -> Optional[str]:
    """'LinearClsHead' for a module, its config or a (scoped) type name;
    None for no module or a config without a type."""
    if isinstance(cfg, nn.Module):
        return type(cfg).__name__
    kind = cfg.get('type') if isinstance(cfg, dict) else cfg
    if kind is None:
        return None
    return str(getattr(kind, '__name__', kind)).split('.')[-1]


def check_classification_head(head, describe: Callable[[], str]) -> None:
    """Raise a TypeError unless ``head`` (a config or a module) is a
    classification head AugSub can train; called before anything is built.

    Args:
        head (dict | nn.Module | None): The model's head.
        describe (callable): Returns what the model is, for the message:
            its type, or its parts when the type is no longer known.
    """
    cls = _type_of(head)
    if head is not None and cls is None:
        return  # an unknown type: the registry's own error follows
    if cls is not None and issubclass(cls, MultiTaskHead):
        # Not one score under one loss: a head and a loss per task.
        raise TypeError(
            'AugSubClassifier does not support MultiTaskHead: its sub loss '
            'matches one score tensor under the loss of one classification '
            'head, and MultiTaskHead holds one head and one loss per task. '
            "Train one task per model with that task's head (e.g. "
            'LinearClsHead).')
    if cls is None or not issubclass(cls, CLASSIFICATION_HEADS):
        what = 'it has no' if head is None else \
            f'its head {cls.__name__} is not a'
        raise TypeError(
            'AugSub trains image classifiers (ImageClassifier -> '
            "AugSubClassifier): the sub-model learns the main model's class "
            f'prediction. This model is not one: {describe()}; {what} '
            "classification head (mmpretrain's ClsHead or MultiLabelClsHead "
            'family), and training would crash at the first step. '
            + FINE_TUNE_HINT)


def describe_parts(model: dict) -> str:
    """'its parts are backbone MAEViT, neck MAEPretrainDecoder, ...' for
    the arguments of a model."""
    parts = [f'{name} {_type_name(model[name])}'
             for name in ('backbone', 'neck', 'data_preprocessor')
             if _type_name(model.get(name)) is not None]
    return f'its parts are {", ".join(parts)}'


def running_stat_norms(module: nn.Module) -> List[_NormBase]:
    """Normalization layers of ``module`` that keep running statistics
    (BatchNorm, SyncBatchNorm, InstanceNorm with
    ``track_running_stats=True``)."""
    return [m for m in module.modules()
            if isinstance(m, _NormBase) and m.track_running_stats]


@contextmanager
def running_stats_frozen(module: nn.Module) -> Iterator[None]:
    """Normalization layers of ``module`` in training mode normalize with the
    batch's statistics, as always, but leave their running statistics
    (``running_mean``, ``running_var``, ``num_batches_tracked``) untouched.

    torch's norm layers do exactly that with ``track_running_stats=False``
    in training mode: the batch statistics and their gradient are those of
    normal training, and no buffer is read or written (so a cumulative
    average, ``momentum=None``, is not advanced either). Layers in eval mode
    (``norm_eval``, frozen stages) use their running statistics and are
    left as they are.
    """
    norms = [m for m in running_stat_norms(module) if m.training]
    try:
        for norm in norms:
            norm.track_running_stats = False
        yield
    finally:
        for norm in norms:
            norm.track_running_stats = True


class AugSubStep:
    """The AugSub training step, shared by the classifiers of every model
    source (:class:`AugSubClassifier` for ``ImageClassifier`` configs,
    :class:`~augsub_mm.models.classifiers.AugSubTimmClassifier` for
    ``TimmClassifier``): one function for the step, the sub pass, the
    branch modes of ``forward`` and the refusals.

    A classifier using it comes first in the bases, before its MMPretrain
    classifier, calls :meth:`init_augsub` at the end of ``__init__``, and
    defines what differs between model sources: ``backbone`` (the network
    the sub-model is bound to), ``_main_branch(inputs, data_samples)``
    (the main losses and the detached teacher) and ``_sub_branch(inputs,
    teacher)`` (``dict(loss_sub=...)``).
    """

    def init_augsub(self, augsub: Union[dict, BaseSubModel],
                    sub_loss: Optional[dict], step_mode: str,
                    sub_bn_stats: str, loss_module: nn.Module) -> None:
        """Build and bind the sub-model and its loss (which follows
        ``loss_module``, the main loss), once the network is built."""
        if step_mode not in STEP_MODES:
            raise ValueError(f'Unsupported step_mode {step_mode!r}, please '
                             f'choose from {STEP_MODES}.')
        self.step_mode = step_mode
        if sub_bn_stats not in SUB_BN_STATS:
            raise ValueError(f'Unsupported sub_bn_stats {sub_bn_stats!r}, '
                             f'please choose from {SUB_BN_STATS}.')
        if sub_bn_stats == 'frozen' and not running_stat_norms(self):
            raise ValueError(
                "sub_bn_stats='frozen' keeps the running statistics of "
                'BatchNorm layers those of the main pass, and this model has '
                'no normalization layer with running statistics (all its '
                'norms are LayerNorm/GroupNorm or track_running_stats=False). '
                'Remove sub_bn_stats.')
        self.sub_bn_stats = sub_bn_stats
        self.augsub = build_submodel(augsub)
        self.augsub.bind(self.backbone)
        if step_mode == 'joint':
            self._check_joint_without_checkpointing()
        if not isinstance(sub_loss, nn.Module):
            sub_loss = MODELS.build(sub_loss or dict(type='AugSubLoss'))
        sub_loss.match_head_loss(loss_module)
        self.sub_loss = sub_loss

    def _check_joint_without_checkpointing(self) -> None:
        name = checkpointing_module(self.backbone)
        if name is not None:
            # One backward over both graphs recomputes the main and the sub
            # forward with the same module state, and under DDP reentrant
            # checkpointing marks a parameter ready twice.
            raise ValueError(
                f"step_mode='joint' cannot be combined with gradient "
                f'checkpointing (with_cp=True, activation_checkpointing or '
                f'reversible layers; found in backbone module {name!r}). Use '
                "step_mode='two_pass' (the default): the same gradient, and "
                'peak memory of normal training.')

    # -- forward --------------------------------------------------------
    def forward(self,
                inputs: torch.Tensor,
                data_samples: Optional[List[DataSample]] = None,
                mode: str = 'tensor',
                teacher: Optional[torch.Tensor] = None,
                sub_seed: Optional[int] = None):
        """The classifier's forward, plus the branches of the AugSub step.

        The extra modes exist so that the training step can run each branch
        through a DDP wrapper's forward (which the reducer needs):
        ``'augsub_main'`` returns the main losses and the detached main
        logits; ``'augsub_sub'`` the sub loss against ``teacher``, and must
        run inside :meth:`sub_pass` (which also covers its backward);
        ``'augsub_joint'`` both, engaging the sub-model with ``sub_seed``
        for the sub forward only.
        """
        if mode == 'augsub_main':
            return self._main_branch(inputs, data_samples)
        if mode == 'augsub_sub':
            if not self._sub_pass_active:
                raise RuntimeError(
                    f"mode='augsub_sub' runs inside {type(self).__name__}."
                    'sub_pass (the training step does it).')
            return self._sub_branch(inputs, teacher)
        if mode == 'augsub_joint':
            return self._joint_branches(inputs, data_samples, sub_seed)
        return super().forward(inputs, data_samples, mode)

    # Not traced by torch.compile, but what it calls is: the sub pass is
    # engaged (seeded stream, switch) in eager code, between graphs.
    @partial(torch.compiler.disable, recursive=False)
    def _joint_branches(self, inputs, data_samples, sub_seed):
        main_losses, teacher = self._main_branch(inputs, data_samples)
        with self.sub_pass(sub_seed, inputs.device):
            return main_losses, self._sub_branch(inputs, teacher)

    _sub_pass_active = False
    _joint_checked = False
    _sync_checked = False

    def _check_synced_pass_uses_all(self, model: nn.Module,
                                    sub_loss: torch.Tensor) -> None:
        """At the first step, before the sub backward: under DDP with
        ``find_unused_parameters=False``, refuse a parameter that got a
        gradient in the main pass (local, in ``no_sync``) and is not in the
        sub pass's graph. DDP's reducer all-reduces only what the synced
        (sub) backward reaches: that parameter would take one update from
        its rank's own gradient, and DDP would raise at the next iteration
        only ("Expected to have finished reduction")."""
        self._sync_checked = True
        if getattr(model, 'find_unused_parameters', True) is not False:
            return
        reached, todo, seen = set(), [sub_loss.grad_fn], set()
        while todo:
            node = todo.pop()
            if node is None or node in seen:
                continue
            seen.add(node)
            variable = getattr(node, 'variable', None)
            if variable is not None:
                reached.add(id(variable))
            todo.extend(n for n, _ in node.next_functions)
        main_only = [name for name, p in self.named_parameters()
                     if p.requires_grad and p.grad is not None
                     and id(p) not in reached]
        if main_only:
            raise RuntimeError(
                f'Under DDP with find_unused_parameters=False, every '
                f'parameter the main pass trains must also be in the sub '
                f'pass, whose backward is the one DDP all-reduces; only the '
                f'main pass uses {", ".join(main_only[:5])}'
                + (f' (and {len(main_only) - 5} more)' if len(main_only) > 5
                   else '') + '. Their gradients would not be averaged '
                'across ranks. Set model_wrapper_cfg = dict(type='
                "'AugSubDistributedDataParallel', find_unused_parameters="
                'True). Nothing was updated.')
    _run_seed = None

    def run_seed(self) -> int:
        """The run's seed, which every sub pass's stream derives from
        (:func:`~augsub_mm.models.utils.sub_pass_seed`): taken once, at the
        first training step, from ``torch.initial_seed()``.

        At that point it is what mmengine's Runner set from
        ``randomness.seed`` (or, on resume, the checkpoint's seed). Read
        again at every step, it could be a seed a backbone drew: RevViT's
        layers call ``torch.seed()`` in every forward, which replaces the
        initial seed with one from the operating system, and the masks would
        then neither repeat between identical runs nor replay on resume.
        """
        if self._run_seed is None:
            self._run_seed = torch.initial_seed()
        return self._run_seed

    @contextmanager
    def sub_pass(self, seed: int, device: torch.device) -> Iterator[None]:
        """The sub-model in force: its masking / drop rates engaged, and
        every random draw from the stream of ``seed``
        (:func:`~augsub_mm.models.utils.sub_pass_seed`), and with
        ``sub_bn_stats='frozen'`` the norm layers' running statistics left
        alone. The training step keeps it in force through the sub backward,
        so that blocks that recompute their forward there (gradient
        checkpointing) compute the sub-model's function with the same draws
        (and leave the running statistics alone too)."""
        bn_context = running_stats_frozen(self) \
            if self.sub_bn_stats == 'frozen' else nullcontext()
        with seeded_stream(seed, device), bn_context, \
                self.augsub.engage(self.backbone):
            self._sub_pass_active = True
            try:
                yield
            finally:
                self._sub_pass_active = False

    def loss(self, inputs: torch.Tensor, data_samples: List[DataSample],
             **kwargs) -> dict:
        if self.training:
            # Whatever calls this in training (mmengine's DDP or FSDP
            # wrapper, on any world size) would train without the sub-model.
            raise RuntimeError(
                f'{type(self).__name__} was asked for a plain training loss: '
                'the model wrapper runs its own training step and would skip '
                'the sub-model. Add to your config: ' + WRAPPER_HINT)
        return super().loss(inputs, data_samples, **kwargs)

    # -- training step --------------------------------------------------
    def train_step(self, data: Union[dict, tuple, list],
                   optim_wrapper: OptimWrapper) -> Dict[str, torch.Tensor]:
        return self.augsub_train_step(self, data, optim_wrapper)

    # torch.compile (the Runner's `compile`, which compiles `train_step`):
    # this frame stays eager -- it engages the sub pass and switches random
    # streams -- and so do the data preprocessor, the losses' parsing, the
    # backward calls and the optimizer update (`eager`); what is compiled is
    # the forward of each branch (and, through AOTAutograd, its backward).
    @partial(torch.compiler.disable, recursive=False)
    def augsub_train_step(self, model: nn.Module, data: Union[dict, tuple,
                                                              list],
                          optim_wrapper: OptimWrapper
                          ) -> Dict[str, torch.Tensor]:
        """One AugSub iteration, shared by single-process and DDP training.

        Args:
            model (nn.Module): ``self``, or the DDP wrapper around it; every
                forward goes through it so that DDP all-reduces gradients.
                A wrapper may define ``augsub_main_pass_context()``, the
                context of the main pass (forward and backward); otherwise
                its ``no_sync`` is used when it has one.
            data: A batch from the dataloader.
            optim_wrapper (OptimWrapper): Any mmengine optimizer wrapper
                (gradient accumulation and AMP included).

        Returns:
            dict: Log variables: ``loss`` (the main loss, as in a baseline
            run), ``loss_sub`` and whatever else the head reports.
        """
        with optim_wrapper.optim_context(model):
            # Once: Mixup/CutMix are drawn here and shared by both branches.
            data = eager(self.data_preprocessor, data, True)
        inputs, data_samples = data['inputs'], data['data_samples']
        seed = sub_pass_seed(optim_wrapper._inner_count,
                             base_seed=self.run_seed())

        if self.step_mode == 'joint':
            if not self._joint_checked:
                # Again at the first step: the Runner's activation_checkpointing
                # wraps forwards after the model was built.
                self._check_joint_without_checkpointing()
                self._joint_checked = True
            with optim_wrapper.optim_context(model):
                main_losses, sub_losses = model(
                    inputs, data_samples, mode='augsub_joint', sub_seed=seed)
            main_loss, log_vars = eager(self.parse_losses, main_losses)
            sub_loss, sub_vars = eager(self.parse_losses, sub_losses)
            eager(optim_wrapper.update_params, (main_loss + sub_loss) / 2)
        else:
            # Pass 1 only accumulates gradients locally: DDP all-reduces
            # once, in pass 2, the summed gradient. Backpropagating here
            # frees the main graph before the sub forward.
            main_context = getattr(model, 'augsub_main_pass_context', None) \
                or getattr(model, 'no_sync', nullcontext)
            with main_context():
                with optim_wrapper.optim_context(model):
                    main_losses, teacher = model(
                        inputs, data_samples, mode='augsub_main')
                main_loss, log_vars = eager(self.parse_losses, main_losses)
                eager(_backward_uncounted, optim_wrapper, main_loss / 2)
            with self.sub_pass(seed, inputs.device):
                with optim_wrapper.optim_context(model):
                    sub_losses = model(inputs, teacher=teacher,
                                       mode='augsub_sub')
                sub_loss, sub_vars = eager(self.parse_losses, sub_losses)
                if not self._sync_checked:
                    eager(self._check_synced_pass_uses_all, model, sub_loss)
                eager(optim_wrapper.update_params, sub_loss / 2)
        if getattr(model, 'detect_anomalous_params', False):
            # Graphs are freed but their nodes remain: a parameter in
            # neither graph got no gradient from this step.
            detect_anomalous_params(main_loss + sub_loss, model=model)
        log_vars.update((k, v) for k, v in sub_vars.items() if k != 'loss')
        return log_vars


@MODELS.register_module()
class AugSubClassifier(AugSubStep, ImageClassifier):
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
        sub_bn_stats (str): What the sub pass does to the running statistics
            of BatchNorm (and other norm layers that keep them). Both modes
            normalize the sub pass with its own batch's statistics, so the
            gradient is the same. ``'update'`` (the paper's behaviour): the
            sub forward updates them too, with the statistics of the masked
            / dropped batch; ``num_batches_tracked`` grows by 2 per
            iteration, and the running statistics used at test time drift
            toward those of masked images (zeroed patches lower a ResNet
            stem's running variance). ``'frozen'``: they are those of the
            main pass alone (``num_batches_tracked`` +1 per iteration), also
            when gradient checkpointing recomputes the sub forward in the
            backward; for BatchNorm, SyncBatchNorm, ``momentum=None``
            alike. Refused for a model without such layers (a ViT).
            Defaults to ``'update'``.
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

    def __new__(cls, *args, **kwargs):
        # The four lines merged onto a TimmClassifier / HuggingFaceClassifier
        # config keep its arguments (model_name, no backbone): the same
        # switch builds the AugSub classifier of that model source.
        if cls is AugSubClassifier and not args and 'backbone' not in kwargs \
                and 'model_name' in kwargs:
            from .augsub_timm_classifier import model_source_classifier
            return model_source_classifier(**kwargs)
        return super().__new__(cls)

    def __init__(self,
                 backbone: dict,
                 augsub: Union[dict, BaseSubModel] = None,
                 sub_loss: Optional[dict] = None,
                 step_mode: str = 'two_pass',
                 sub_bn_stats: str = 'update',
                 **kwargs):
        # Before anything is built: merged onto a self-supervised model's
        # config, the switch lines leave its parts, which would fail later
        # with unrelated errors (its data preprocessor, its loss).
        check_classification_head(
            kwargs.get('head'), lambda: describe_parts(dict(
                kwargs, backbone=backbone)) + ' (the line `model = '
            "dict(type='AugSubClassifier', ...)` replaces the type of the "
            'model of the config it is merged onto, e.g. MAE or SimCLR '
            'pre-training)')
        super().__init__(backbone, **kwargs)
        self.init_augsub(augsub, sub_loss, step_mode, sub_bn_stats,
                         self.head.loss_module)

    def _head_scores(self, feats) -> Union[torch.Tensor, tuple]:
        """The head's score tensor, or its tuple of scores for a head
        whose loss sums the loss over them (:data:`SUMMED_SCORE_LOSSES`)."""
        score = self.head(feats)
        if isinstance(score, torch.Tensor):
            return score
        if isinstance(score, (tuple, list)) and score and all(
                isinstance(s, torch.Tensor) for s in score) and \
                type(self.head)._get_loss in SUMMED_SCORE_LOSSES:
            return tuple(score)
        raise TypeError(
            f'AugSubClassifier needs a head whose forward returns one score '
            f'tensor (or, as ConformerHead, scores whose losses it sums); '
            f'{type(self.head).__name__} returns {type(score).__name__}, and '
            "AugSub cannot tell what the sub-model should match. Use a head "
            'with one score (e.g. LinearClsHead).')

    def _main_branch(self, inputs, data_samples):
        feats = self.extract_feat(inputs)
        if type(self.head).loss in STANDARD_HEAD_LOSSES:
            cls_score = self._head_scores(feats)
            losses = self.head._get_loss(cls_score, data_samples)
            return losses, _detached(cls_score)
        # A head with a loss of its own (ArcFaceClsHead adds its margin to
        # the target class there): the main loss is the head's, and the
        # teacher is the head's prediction, as at inference.
        losses = self.head.loss(feats, data_samples)
        with torch.no_grad():
            teacher = self._head_scores(feats)
        return losses, teacher

    def _sub_branch(self, inputs, teacher):
        sub_score = self._head_scores(self.extract_feat(inputs))
        # Once, before any backward: a sub pass that applied the sub-model
        # nowhere would train a copy of the main pass.
        self.augsub.check_acted(self.backbone)
        if isinstance(sub_score, tuple):
            return dict(loss_sub=sum(
                self.sub_loss(s, t) for s, t in zip(sub_score, teacher)))
        return dict(loss_sub=self.sub_loss(sub_score, teacher))

def _detached(score: Union[torch.Tensor, tuple]):
    if isinstance(score, tuple):
        return tuple(s.detach() for s in score)
    return score.detach()


@torch.compiler.disable
def eager(fn: Callable, *args, **kwargs):
    """``fn(*args, **kwargs)``, never compiled (nor what it calls).

    Under the Runner's ``compile``, the AugSub step compiles the branches'
    forwards only. Batch augmentations draw Python numbers (CutMix's box,
    Mixup's lambda) that compiled code specializes on, so a compiled data
    preprocessor recompiles every iteration until torch gives up on it;
    mmengine's optimizer wrapper logs into growing buffers (gradient norm),
    with the same effect. Neither gains from compiling.
    """
    return fn(*args, **kwargs)


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
