"""AMP under FSDP with the AugSub step, on 2 CPU processes (gloo):
AugSubFSDPStrategy builds the recipe's ``AmpOptimWrapper`` (through our
optimizer constructor) with FSDP's ``ShardedGradScaler``, and both passes
share its loss scale: one unscale / step / update per iteration, and the
update does not depend on the scale. The gradient is unscaled before it is
clipped, by the norm of the whole gradient (not each rank's shard).

mmengine refuses to build an AmpOptimWrapper without CUDA and its scaler
disables itself on the CPU: the check is patched and the scaler replaced by
a CPU ``ShardedGradScaler`` (spied on); autocast runs in bfloat16."""
import json
import os
import os.path as osp
import socket
import warnings
from unittest.mock import MagicMock, patch

import pytest
import torch
import torch.multiprocessing as mp

CUDA_CHECK = 'mmengine.optim.optimizer.amp_optimizer_wrapper.is_cuda_available'
#: Below the gradient's norm (11.8): the step clips.
CLIP = 5.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def worker(rank: int, port: int, out_dir: str) -> None:
    import torch.distributed as dist
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS
    from mmpretrain.structures import DataSample
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
    from torch.distributed.fsdp.sharded_grad_scaler import ShardedGradScaler

    import augsub_mm  # noqa: F401
    from augsub_mm.engine.strategies import AugSubFSDPStrategy
    from augsub_mm.models.wrappers import AugSubFullyShardedDataParallel
    from conftest import TINY_CONFIGS
    from flexible_probe import full_grad_norm

    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    dist.init_process_group('gloo', rank=rank, world_size=2)
    torch.set_num_threads(1)
    init_default_scope('mmpretrain')
    cfg = Config.fromfile(osp.join(TINY_CONFIGS, 'vit-tiny_augmask_toy.py'))
    cfg.model.backbone.drop_path_rate = 0.0
    cfg.model.train_cfg = None
    result = {}
    for init_scale in (1., 2.**10):
        # Built first: a strategy seeds the generators (its environment
        # setup), and the sub pass's masks derive from the seed.
        strategy = AugSubFSDPStrategy()
        torch.manual_seed(0)
        model = AugSubFullyShardedDataParallel(
            MODELS.build(cfg.model), device_id=torch.device('cpu'))
        with patch(CUDA_CHECK, return_value=True), \
                warnings.catch_warnings():
            warnings.simplefilter('ignore')  # "CUDA is not available"
            optim = strategy.build_optim_wrapper(
                dict(type='AmpOptimWrapper', dtype='bfloat16',
                     constructor='AugSubOptimWrapperConstructor',
                     optimizer=dict(type='SGD', lr=0.1),
                     clip_grad=dict(max_norm=CLIP)), model)
        result['scaler_type'] = type(optim.loss_scaler).__name__
        optim.loss_scaler = MagicMock(wraps=ShardedGradScaler(
            'cpu', init_scale=init_scale))
        g = torch.Generator().manual_seed(rank)
        data = dict(
            inputs=[torch.randint(0, 256, (3, 32, 32), generator=g,
                                  dtype=torch.uint8) for _ in range(4)],
            data_samples=[DataSample().set_gt_label(c) for c in range(4)])
        with FSDP.summon_full_params(model, writeback=False):
            start = torch.cat(
                [p.detach().flatten() for p in model.module.parameters()])
        applied = []
        optim.optimizer.register_step_pre_hook(
            lambda *_: applied.append(full_grad_norm(model)))
        log_vars = model.train_step(data, optim)
        grad_norm = optim.message_hub.get_scalar('train/grad_norm').current()
        scaler = optim.loss_scaler
        with FSDP.summon_full_params(model, writeback=False):
            params = torch.cat(
                [p.detach().flatten() for p in model.module.parameters()])
        result[str(init_scale)] = dict(
            calls=[scaler.scale.call_count, scaler.unscale_.call_count,
                   scaler.step.call_count, scaler.update.call_count],
            count=optim._inner_count, logged=sorted(log_vars),
            grad_norm=float(grad_norm), applied=applied,
            params=params.tolist(), start=start.tolist())
    with open(osp.join(out_dir, f'rank{rank}.json'), 'w') as f:
        json.dump(result, f)
    dist.barrier()
    dist.destroy_process_group()


def test_fsdp_amp_one_scale_for_both_passes(tmp_path):
    mp.start_processes(worker, args=(free_port(), str(tmp_path)), nprocs=2,
                       start_method='spawn')
    ranks = []
    for rank in (0, 1):
        with open(tmp_path / f'rank{rank}.json') as f:
            ranks.append(json.load(f))
    for result in ranks:
        assert result['scaler_type'] == 'ShardedGradScaler'
        small, large = result['1.0'], result['1024.0']
        for run in (small, large):
            # Both backward passes scaled; unscaled, stepped, updated once.
            assert run['calls'] == [2, 1, 1, 1]
            assert run['count'] == 1
            assert run['params'] != run['start']  # not a skipped step
            assert {'loss', 'loss_sub'} <= set(run['logged'])
        # Unscaled, then clipped by the norm of the whole gradient (each
        # rank holds a shard): the norm logged on each rank, the same at
        # both scales.
        assert small['grad_norm'] > CLIP
        for run in (small, large):
            assert run['grad_norm'] == pytest.approx(
                ranks[0]['1.0']['grad_norm'], rel=1e-6)
            assert run['applied'] == [pytest.approx(CLIP, rel=1e-5)]
        # The update does not depend on the loss scale.
        torch.testing.assert_close(torch.tensor(large['params']),
                                   torch.tensor(small['params']),
                                   rtol=1e-5, atol=1e-6)
    assert ranks[0]['1.0']['params'] == ranks[1]['1.0']['params']


def test_fsdp_norm_clipping_refuses_unknown_arguments():
    # Refused before FSDP is asked: no process group needed.
    from augsub_mm.models.wrappers import AugSubFullyShardedDataParallel
    with pytest.raises(ValueError, match=r"clip_grad got \['clip_value'\]"):
        AugSubFullyShardedDataParallel.clip_global_norm(
            None, [], max_norm=1.0, clip_value=0.1)
