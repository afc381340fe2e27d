from contextlib import contextmanager, nullcontext
from functools import partial
from typing import Callable, ContextManager, Dict, Iterator, Optional, Union

import torch
import torch.nn as nn
from mmengine.device import get_device
from mmengine.model import MMFullyShardedDataParallel
from mmengine.optim import OptimWrapper
from mmengine.registry import FUNCTIONS, MODEL_WRAPPERS


# Registered in mmengine's root registry, where FSDPStrategy looks
# `model_wrapper.type` up.
@MODEL_WRAPPERS.register_module()
class AugSubFullyShardedDataParallel(MMFullyShardedDataParallel):
    """FSDP wrapper that runs the AugSub training step.

    ``MMFullyShardedDataParallel.train_step`` does one forward in ``'loss'``
    mode and would skip the sub-model; this wrapper hands the step to
    :meth:`AugSubClassifier.augsub_train_step`, passing itself, so that both
    branches run through FSDP's forward (parameters gathered, gradients
    reduce-scattered).

    FSDP decides whether to reduce-scatter when a backward reaches a
    parameter, not at forward time. Two choices for the main pass:

    - ``sync_main_pass=True`` (default): the main backward reduce-scatters
      ``main / 2`` and frees the unsharded gradient; the sub backward
      reduce-scatters ``sub / 2`` and FSDP adds it to the sharded gradient.
      Same summed gradient; each rank keeps only its shard of the gradient
      between the passes (FSDP's memory saving is kept), at the price of
      two reduce-scatters per iteration.
    - ``sync_main_pass=False``: the main pass runs under ``no_sync()``, one
      reduce-scatter per iteration (as DDP's one all-reduce), but every
      rank holds the full, unsharded gradient of the model through the sub
      pass -- what FSDP is used to avoid.

    ``docs/performance.md`` has the bytes sent either way.

    The sub-model's own parameters (Swin's mask token: C numbers) are kept
    out of FSDP's flat parameters and replicated on every rank, with their
    gradient averaged over the ranks by a hook: the sub-model is engaged
    before FSDP's forward and holds them, while FSDP (``use_orig_params``)
    swaps a parameter for a view of its flat parameter only during its own
    forward, so a held parameter would be the local shard (measured: an
    empty tensor on rank 0).

    An ``auto_wrap_policy`` never makes the backbone or the sub-model an
    FSDP unit of its own (their children may be): the sub-model reaches
    into the backbone by module type (its family adapter) and uses its own
    parameters (the mask token) inside the backbone's forward.

    Gradient clipping by norm (``optim_wrapper = dict(clip_grad=dict(
    max_norm=...))``) clips by the norm of the whole gradient, with FSDP's
    :meth:`clip_grad_norm_`, and logs that norm as ``grad_norm``:
    mmengine's optimizer wrapper would clip each rank's shard by the shard's
    own norm. Clipping by value (``type='value'``) needs nothing: it is
    elementwise, so clipping each shard is clipping the whole gradient.

    ``use_orig_params`` must stay True (mmengine's default): the optimizer
    constructor and the sub-model find their parameters (Swin's mask token)
    by identity. On a machine without an accelerator (gloo) ``device_id``
    becomes the CPU.

    Set it with ``strategy = dict(type='AugSubFSDPStrategy')`` (which picks
    this wrapper), or ``model_wrapper=dict(type=
    'AugSubFullyShardedDataParallel', ...)`` inside an ``FSDPStrategy``.

    Args:
        module (AugSubClassifier): The model to wrap.
        sync_main_pass (bool): Reduce-scatter after the main backward too.
            Defaults to True.
        **kwargs: Arguments of :class:`MMFullyShardedDataParallel`
            (``auto_wrap_policy``, ``mixed_precision``, ...).
    """

    def __init__(self, module, sync_main_pass: bool = True, **kwargs):
        if not hasattr(module, 'augsub_train_step'):
            raise TypeError(
                'AugSubFullyShardedDataParallel wraps an AugSubClassifier, '
                f'got {type(module).__name__}; use MMFullyShardedDataParallel '
                '(the default) for other models.')
        if not kwargs.get('use_orig_params', True):
            raise ValueError(
                'AugSubFullyShardedDataParallel needs use_orig_params=True '
                "(mmengine's default): the sub-model's parameters (Swin's "
                'mask token) are found by identity.')
        if get_device() == 'cpu':
            # FSDPStrategy passes device_id=LOCAL_RANK, a CUDA device index;
            # without a device, FSDP looks for an accelerator and refuses.
            kwargs['device_id'] = torch.device('cpu')
        own_params = list(module.augsub.parameters())
        if own_params:
            _replicate(module, own_params, kwargs)
        policy = resolve_policy(kwargs.get('auto_wrap_policy'))
        if policy is not None:
            kwargs['auto_wrap_policy'] = partial(
                _never_wrap, policy=policy,
                keep=(module.backbone, module.augsub))
        super().__init__(module=module, **kwargs)
        self.sync_main_pass = sync_main_pass
        for param in own_params:
            param.register_post_accumulate_grad_hook(
                partial(_average_over_ranks, group=self.process_group))

    def augsub_main_pass_context(self) -> ContextManager:
        """What surrounds the main forward and backward of the step."""
        return nullcontext() if self.sync_main_pass else self.no_sync()

    def train_step(self, data: Union[dict, tuple, list],
                   optim_wrapper: OptimWrapper) -> Dict[str, torch.Tensor]:
        with self._global_norm_clipping(optim_wrapper):
            return self.module.augsub_train_step(self, data, optim_wrapper)

    @contextmanager
    def _global_norm_clipping(self,
                              optim_wrapper: OptimWrapper) -> Iterator[None]:
        """Within the step, the optimizer wrapper's norm clipping calls
        :meth:`clip_global_norm` instead of torch's per-tensor-list
        function. Only the function is swapped: mmengine's ``_clip_grad``
        still decides when to clip (``AmpOptimWrapper`` after unscaling the
        gradient) and logs what the function returns."""
        local = torch.nn.utils.clip_grad_norm_
        if getattr(optim_wrapper, 'clip_func', None) is not local:
            # No norm clipping, clipping by value (exact on shards), or a
            # clip function of the user's own.
            yield
            return
        optim_wrapper.clip_func = self.clip_global_norm
        try:
            yield
        finally:
            optim_wrapper.clip_func = local

    def clip_global_norm(self, params, max_norm: float,
                         norm_type: float = 2.0,
                         error_if_nonfinite: bool = False,
                         foreach: Optional[bool] = None,
                         **unknown) -> torch.Tensor:
        """``torch.nn.utils.clip_grad_norm_`` for the sharded gradient:
        FSDP's :meth:`clip_grad_norm_` all-reduces the shards' norms
        (parameters outside FSDP's flat parameters, replicated on every
        rank, counted once). It clips every parameter of the model with a
        gradient, ``params`` (the optimizer's) being those unless some
        parameter with a gradient was left out of the optimizer.
        ``foreach`` is a speed choice FSDP makes itself.

        Every rank must call it (it all-reduces): mmengine's ``_clip_grad``
        skips the call on a rank without any gradient, which only a rank
        whose shards hold padding alone (a model of fewer elements than
        ranks per FSDP unit) could be."""
        if unknown:
            raise ValueError(
                f'clip_grad got {sorted(unknown)}, which gradient clipping '
                'by norm does not take: its arguments are those of '
                'torch.nn.utils.clip_grad_norm_ (max_norm, norm_type, '
                'error_if_nonfinite, foreach). Remove the others from '
                "optim_wrapper's clip_grad.")
        norm = self.clip_grad_norm_(max_norm, norm_type)
        if error_if_nonfinite and not torch.isfinite(norm):
            # torch raises before clipping; FSDP's function has no such
            # check, so the gradient is already scaled: the run stops.
            raise RuntimeError(
                f'The total norm of order {norm_type} of the gradient is '
                'non-finite, so it cannot be clipped. To scale the gradient '
                'by the non-finite norm anyway, set '
                "error_if_nonfinite=False in optim_wrapper's clip_grad.")
        return norm


def resolve_policy(policy: Union[str, dict, Callable, None]
                   ) -> Optional[Callable]:
    """An ``auto_wrap_policy`` as mmengine's FSDP wrapper accepts it (a
    registered or dotted function name, a dict with its ``type`` and
    keyword arguments, or a callable), as a callable."""
    if policy is None or callable(policy):
        return policy
    with FUNCTIONS.switch_scope_and_registry(None):
        if isinstance(policy, str):
            function = FUNCTIONS.get(policy)
            kwargs = {}
        else:
            kwargs = dict(policy)
            function = kwargs.pop('type')
            if isinstance(function, str):
                function = FUNCTIONS.get(function)
    if not callable(function):
        raise ValueError(f'auto_wrap_policy {policy!r} is not registered.')
    return partial(function, **kwargs)


def _never_wrap(module: nn.Module, recurse: bool, *args, policy: Callable,
                keep: tuple, **kwargs) -> bool:
    # FSDP asks twice per module: whether to look at its children
    # (recurse=True), then whether to wrap it (recurse=False).
    if not recurse and any(module is k for k in keep):
        return False
    return policy(module, recurse, *args, **kwargs)


def _replicate(module: nn.Module, params: list, kwargs: dict) -> None:
    """Add ``module.augsub`` (holding ``params``) to FSDP's ignored modules
    (or its parameters to ``ignored_parameters``, if given: FSDP takes one
    of the two), on FSDP's device, in place of ``kwargs``."""
    if 'ignored_parameters' in kwargs:
        named = dict(module.named_parameters())
        ignored = [named[p] if isinstance(p, str) else p
                   for p in kwargs['ignored_parameters']]
        kwargs['ignored_parameters'] = ignored + params
    else:
        named = dict(module.named_modules())
        ignored = [named[m] if isinstance(m, str) else m
                   for m in kwargs.get('ignored_modules') or []]
        kwargs['ignored_modules'] = ignored + [module.augsub]
    # FSDP moves the parameters it manages to device_id, not ignored ones.
    device = kwargs.get('device_id')
    if device is not None:
        if not isinstance(device, torch.device):
            device = torch.device(get_device(), device)
        module.augsub.to(device)


def _average_over_ranks(param: torch.Tensor, group) -> None:
    torch.distributed.all_reduce(param.grad, group=group)
    param.grad.div_(torch.distributed.get_world_size(group))
