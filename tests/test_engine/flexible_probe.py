"""Test-only probe for FlexibleRunner runs, loaded through a config's
``custom_imports``: after training, each rank writes the full parameters of
the model (gathered from FSDP's shards), keyed by the names of the plain
model, the wrapper and strategy types, the optimizer's parameter groups
of the sub-model's parameters, the ``grad_norm`` logged at each iteration
and (DDP, FSDP) the norm of the whole gradient each optimizer step applies
to ``<work_dir>/probe_rank<R>.pt``. Loaded, it also memoizes the formatting
of config texts (CPU time of the tests)."""
import contextlib
import os.path as osp

import torch
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS
from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
from torch.nn.parallel import DistributedDataParallel

try:
    import deepspeed.ops
except ImportError:  # the DeepSpeed tests are skipped
    pass
else:
    # DeepSpeed on the CPU JIT-compiles its shared-memory all-reduce op
    # (deepspeed_shm_comm: C++ against torch's headers, ~90 CPU-seconds,
    # again in every new environment) when it sets up its communication;
    # only tensor-parallel inference uses it (inference_all_reduce), ZeRO's
    # collectives are torch.distributed's (gloo). Marked incompatible, as
    # on a machine without a compiler, it is not built: these runs train
    # the same way.
    deepspeed.ops.__compatible_ops__['deepspeed_shm_comm'] = False


def _memoize_config_text() -> None:
    """Format each config text once per process: the Runner formats its
    config with yapf 5 times (the log, the dumped config, the visualizer's
    copy, each checkpoint), ~0.2 CPU-s each for the toy configs, in each of
    the ~25 processes these tests launch. yapf's FormatCode is a function
    of its arguments alone: the memo changes no text the run writes."""
    import functools
    import json

    from mmengine.config import config as mm_config
    if getattr(mm_config.FormatCode, '_probe_memo', False):
        return
    format_code, memo = mm_config.FormatCode, {}

    @functools.wraps(format_code)
    def formatted(source, style_config=None, **kwargs):
        key = (source, json.dumps(style_config, sort_keys=True, default=str),
               json.dumps(kwargs, sort_keys=True, default=str))
        if key not in memo:
            memo[key] = format_code(source, style_config=style_config,
                                    **kwargs)
        return memo[key]

    formatted._probe_memo = True
    mm_config.FormatCode = formatted


# Imported through the config's custom_imports, before the Runner is built.
_memoize_config_text()


def plain_name(name: str) -> str:
    return name.replace('_fsdp_wrapped_module.', '')


def unwrapped(wrapper):
    return wrapper.module if is_model_wrapper(wrapper) or \
        isinstance(wrapper, FSDP) else wrapper


def full_params(wrapper) -> dict:
    gather = FSDP.summon_full_params(wrapper, writeback=False) \
        if isinstance(wrapper, FSDP) else contextlib.nullcontext()
    with gather:
        return {plain_name(name): p.detach().clone()
                for name, p in unwrapped(wrapper).named_parameters()}


def full_grad_norm(wrapper) -> float:
    """The 2-norm of the whole gradient: DDP's are whole on every rank,
    FSDP's are gathered from the shards (every rank must call this)."""
    gather = FSDP.summon_full_params(wrapper, writeback=False,
                                     with_grads=True) \
        if isinstance(wrapper, FSDP) else contextlib.nullcontext()
    with gather:
        # In float64: a float32 norm of the toy Swin's concatenated
        # gradient is 3e-5 (relative) off torch's norm of per-tensor norms.
        grads = [p.grad.detach().flatten().double()
                 for p in unwrapped(wrapper).parameters()
                 if p.grad is not None]
        return torch.linalg.vector_norm(torch.cat(grads)).item()


@HOOKS.register_module()
class FlexibleProbeHook(Hook):

    def before_train(self, runner) -> None:
        self.start = full_params(runner.model)
        self.grad_norms, self.applied_norms = [], []
        if isinstance(runner.model, (DistributedDataParallel, FSDP)):
            # After the optimizer wrapper's clipping, before the update.
            runner.optim_wrapper.optimizer.register_step_pre_hook(
                lambda *_: self.applied_norms.append(
                    full_grad_norm(runner.model)))

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None) -> None:
        # What the logger prints: the scalar the optimizer wrapper's
        # gradient clipping updates (absent without norm clipping).
        if 'train/grad_norm' in runner.message_hub.log_scalars:
            self.grad_norms.append(
                runner.message_hub.get_scalar('train/grad_norm').current())

    def after_run(self, runner) -> None:
        wrapper = runner.model
        model = unwrapped(wrapper)
        params = full_params(wrapper)
        token = getattr(model.augsub, 'mask_token', None)
        token_decay = None
        if token is not None:
            token_decay = [g['weight_decay']
                           for g in runner.optim_wrapper.optimizer.param_groups
                           if any(p is token for p in g['params'])]
        # Layer-wise lr decay (the MAE recipes): the scale of the first
        # backbone parameter's group against the head's.
        first = next(model.backbone.parameters())
        lr_scale = [g.get('lr_scale')
                    for g in runner.optim_wrapper.optimizer.param_groups
                    if any(p is first for p in g['params'])]
        strategy = getattr(runner, 'strategy', None)
        torch.save(
            dict(params=params, start=self.start,
                 wrapper=type(wrapper).__name__,
                 strategy=type(strategy).__name__ if strategy else None,
                 iter=runner.iter, token_decay=token_decay,
                 grad_norms=self.grad_norms,
                 applied_norms=self.applied_norms,
                 backbone_lr_scale=lr_scale),
            osp.join(runner.work_dir, f'probe_rank{runner.rank}.pt'))
