"""The hook ``gpu_check.py`` adds to the training runs it launches through
``tools/dist_train.sh``: it writes what the Runner actually built and ran
(wrapper, process group backend, devices, optimizer wrapper, compiled step,
logged losses, TorchDynamo's graph count after each iteration) to
``<work_dir>/gpu_check_probe.json``, for the check to read. Rank 0 writes."""
import json
import math
import os.path as osp

import torch
from mmengine.dist import get_rank, get_world_size, is_distributed
from mmengine.hooks import Hook
from mmengine.registry import HOOKS


def _dynamo_counts() -> dict:
    """Graphs TorchDynamo has compiled in this process so far, and frames
    it has processed (a frame may yield no graph)."""
    try:
        from torch._dynamo.utils import counters
    except ImportError:
        return dict(graphs=0, frames=0)
    return dict(graphs=int(counters['stats'].get('unique_graphs', 0)),
                frames=int(counters['frames'].get('ok', 0)))


@HOOKS.register_module()
class GpuCheckProbeHook(Hook):
    priority = 'VERY_LOW'

    def __init__(self):
        self.iterations = []

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        logged = {k: float(v) for k, v in (outputs or {}).items()
                  if isinstance(v, torch.Tensor) and v.numel() == 1}
        self.iterations.append(dict(logged, **_dynamo_counts()))

    def after_train(self, runner):
        if get_rank() != 0:
            return
        model = runner.model
        module = getattr(model, 'module', model)
        train_step = model.train_step
        optim = runner.optim_wrapper
        scaler = getattr(optim, 'loss_scaler', None)
        info = dict(
            wrapper=type(model).__name__,
            model=type(module).__name__,
            distributed=is_distributed(),
            backend=torch.distributed.get_backend()
            if is_distributed() else None,
            world_size=get_world_size(),
            param_devices=sorted({str(p.device)
                                  for p in module.parameters()}),
            optim_wrapper=type(optim).__name__,
            loss_scale=None if scaler is None else float(scaler.get_scale()),
            compiled=getattr(train_step, '_torchdynamo_orig_callable',
                             None) is not None,
            cudnn_benchmark=torch.backends.cudnn.benchmark,
            iterations=self.iterations,
            finite=all(math.isfinite(v) for it in self.iterations
                       for k, v in it.items() if k.startswith('loss')),
        )
        with open(osp.join(runner.work_dir, 'gpu_check_probe.json'),
                  'w') as f:
            json.dump(info, f, indent=1)
