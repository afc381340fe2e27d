"""Test-only probe for distributed AugSub runs, loaded through a config's
``custom_imports``: each rank records the patch-token indices its AugMask
kept, and after training writes them with its parameter vector and each
parameter's lr scale to ``<work_dir>/probe_rank<R>.pt``."""
import os.path as osp

import torch
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS

from augsub_mm.models.utils import masking


@HOOKS.register_module()
class AugSubProbeHook(Hook):
    """Wraps ``masking.random_keep_indices`` for the whole run (``drop_tokens``
    looks it up in its module at call time) and dumps what it saw."""

    def before_run(self, runner) -> None:
        self.kept = []
        self._draw = masking.random_keep_indices

        def recording(*args, **kwargs):
            indices = self._draw(*args, **kwargs)
            self.kept.append(indices.detach().cpu().clone())
            return indices

        masking.random_keep_indices = recording

    def after_run(self, runner) -> None:
        masking.random_keep_indices = self._draw
        model = runner.model.module if is_model_wrapper(runner.model) \
            else runner.model
        params = torch.cat(
            [p.detach().reshape(-1).cpu() for p in model.parameters()])
        optimizer = runner.optim_wrapper.optimizer
        # Each trainable parameter's lr scale (1 without layer-wise decay).
        names = {id(p): n for n, p in model.named_parameters()}
        lr_scales = {names[id(p)]: group.get('lr_scale', 1.)
                     for group in optimizer.param_groups
                     for p in group['params']}
        torch.save(
            dict(params=params, kept=self.kept, lr_scales=lr_scales,
                 wrapper=type(runner.model).__name__),
            osp.join(runner.work_dir, f'probe_rank{runner.rank}.pt'))
