"""Test-only probe, loaded through a config's ``custom_imports``: after the
first training iteration, writes to ``<work_dir>/optim_probe.json`` the
weight decay of the optimizer group that holds each parameter, and whether
the parameter changed in that iteration."""
import json
import os.path as osp

import torch
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS


@HOOKS.register_module()
class OptimProbeHook(Hook):

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if batch_idx == 0:
            self.before = {n: p.detach().clone()
                           for n, p in self._model(runner).named_parameters()}

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        if batch_idx != 0:
            return
        params = dict(self._model(runner).named_parameters())
        names = {id(p): n for n, p in params.items()}
        found = {}
        for group in runner.optim_wrapper.optimizer.param_groups:
            for p in group['params']:
                name = names[id(p)]
                found[name] = dict(
                    weight_decay=group['weight_decay'],
                    changed=not torch.equal(self.before[name], p.detach()),
                    shape=list(p.shape))
        with open(osp.join(runner.work_dir, 'optim_probe.json'), 'w') as f:
            json.dump(found, f)

    @staticmethod
    def _model(runner):
        model = runner.model
        return model.module if is_model_wrapper(model) else model
