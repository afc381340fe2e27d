"""The GradScaler's state in AugSubFSDPStrategy's checkpoints (found while
reviewing the CUDA-only paths for gpu_check.py).

The Runner saves ``AmpOptimWrapper.state_dict()``, which holds the loss
scaler's state beside the optimizer's. mmengine's FSDPStrategy saves
``FSDP.optim_state_dict(model, optim_wrapper)`` instead, and torch builds
that dict from ``state`` and ``param_groups`` only: the scale is dropped,
and a resumed fp16 run (the zoo's MAE FSDP configs use AmpOptimWrapper)
starts again from the initial scale, skipping steps until it has backed off
to where it was. AugSubFSDPStrategy saves it beside them and restores it.
Run on one CPU process (gloo), AMP in bfloat16 with
mmengine's CUDA check patched, as in test_fsdp_amp.py."""
import os
import os.path as osp
import socket
import warnings
from unittest.mock import patch

import torch
import torch.multiprocessing as mp

CUDA_CHECK = 'mmengine.optim.optimizer.amp_optimizer_wrapper.is_cuda_available'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def worker(rank: int, port: int, out_dir: str) -> None:
    import torch.distributed as dist
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS
    from torch.distributed.fsdp.sharded_grad_scaler import ShardedGradScaler

    import augsub_mm  # noqa: F401
    from augsub_mm.engine.strategies import AugSubFSDPStrategy
    from augsub_mm.models.wrappers import AugSubFullyShardedDataParallel
    from conftest import TINY_CONFIGS

    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    dist.init_process_group('gloo', rank=rank, world_size=1)
    init_default_scope('mmpretrain')
    cfg = Config.fromfile(osp.join(TINY_CONFIGS, 'vit-tiny_augmask_toy.py'))
    strategy = AugSubFSDPStrategy()
    model = AugSubFullyShardedDataParallel(
        MODELS.build(cfg.model), device_id=torch.device('cpu'))
    with patch(CUDA_CHECK, return_value=True), warnings.catch_warnings():
        warnings.simplefilter('ignore')
        optim = strategy.build_optim_wrapper(
            dict(type='AmpOptimWrapper', dtype='bfloat16',
                 constructor='AugSubOptimWrapperConstructor',
                 optimizer=dict(type='SGD', lr=0.1)), model)
    # A scale a run reached by backing off (not the initial one).
    optim.loss_scaler = ShardedGradScaler('cpu', init_scale=2.**7)
    strategy.model, strategy.optim_wrapper = model, optim
    saved = strategy.optim_state_dict()
    fresh = ShardedGradScaler('cpu', init_scale=2.**16)
    optim.loss_scaler = fresh
    strategy.load_optim_state_dict(saved)
    torch.save(dict(keys=sorted(saved), restored=fresh.get_scale()),
               osp.join(out_dir, 'result.pt'))
    dist.destroy_process_group()


def test_fsdp_checkpoint_keeps_the_loss_scale(tmp_path):
    mp.start_processes(worker, args=(free_port(), str(tmp_path)), nprocs=1,
                       start_method='spawn')
    result = torch.load(tmp_path / 'result.pt')
    assert 'loss_scaler' in result['keys'], result['keys']
    assert result['restored'] == 2.**7
