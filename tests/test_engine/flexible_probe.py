"""Test-only probe for FlexibleRunner runs, loaded through a config's
``custom_imports``: after training, each rank writes the full parameters of
the model (gathered from FSDP's shards), keyed by the names of the plain
model, the wrapper and strategy types, and the optimizer's parameter groups
of the sub-model's parameters to ``<work_dir>/probe_rank<R>.pt``."""
import contextlib
import os.path as osp

import torch
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS
from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

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


@HOOKS.register_module()
class FlexibleProbeHook(Hook):

    def before_train(self, runner) -> None:
        self.start = full_params(runner.model)

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
                 backbone_lr_scale=lr_scale),
            osp.join(runner.work_dir, f'probe_rank{runner.rank}.pt'))
