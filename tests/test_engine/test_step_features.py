"""The AugSub step under every optimizer-wrapper feature: gradient
accumulation, AMP loss scaling, EMA, and DDP (no_sync on the main pass only,
one all-reduce of the summed gradient per update)."""
import json
import os
import os.path as osp
import socket
import warnings
from unittest.mock import MagicMock, patch

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from mmengine.config import Config
from mmengine.optim import AmpOptimWrapper, OptimWrapper
from mmengine.runner import Runner
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

import augsub_mm  # noqa: F401
from augsub_mm.models.utils import sub_pass_seed
from conftest import data_root_options

NUM_CLASSES = 4


def model_cfg(augsub=True, step_mode='two_pass'):
    cfg = dict(
        type='ImageClassifier',
        backbone=dict(type='VisionTransformer',
                      arch=dict(embed_dims=32, num_layers=2, num_heads=2,
                                feedforward_channels=64),
                      img_size=32, patch_size=8, drop_path_rate=0.1),
        head=dict(type='VisionTransformerClsHead', num_classes=NUM_CLASSES,
                  in_channels=32),
        data_preprocessor=dict(num_classes=NUM_CLASSES, mean=[127.5] * 3,
                               std=[127.5] * 3),
        train_cfg=dict(augments=[dict(type='Mixup', alpha=0.8)]))
    if augsub:
        cfg.update(type='AugSubClassifier',
                   augsub=dict(type='AugMask', ratio=0.5),
                   step_mode=step_mode)
    return cfg


def build(augsub=True, step_mode='two_pass'):
    torch.manual_seed(0)
    return MODELS.build(model_cfg(augsub, step_mode))


def batch(seed, n=4):
    g = torch.Generator().manual_seed(seed)
    return dict(
        inputs=[torch.randint(0, 256, (3, 32, 32), generator=g,
                              dtype=torch.uint8) for _ in range(n)],
        data_samples=[DataSample().set_gt_label(i % NUM_CLASSES)
                      for i in range(n)])


def seed_all(seed):
    # Mixup draws from numpy; masks and drop-path from torch.
    np.random.seed(seed)
    torch.manual_seed(seed)


def params_of(model):
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def spy_steps(optim_wrapper):
    """Record the iteration count at every optimizer step."""
    steps = []
    step = optim_wrapper.optimizer.step

    def recording_step(*args, **kwargs):
        steps.append(optim_wrapper._inner_count)
        return step(*args, **kwargs)

    optim_wrapper.optimizer.step = recording_step
    return steps


# -- gradient accumulation ----------------------------------------------------
@pytest.mark.parametrize('step_mode', ['two_pass', 'joint'])
def test_accumulation_steps_and_scales_as_without_augsub(step_mode):
    # 5 iterations, 2 per update: steps at 2, 4 and 5; the last window has
    # one iteration, so its loss is not halved (mmengine's remainder rule).
    iters, counts = 5, 2
    schedules = {}
    for augsub in (False, True):
        model = build(augsub, step_mode)
        optim = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1),
                             accumulative_counts=counts)
        optim.initialize_count_status(model, 0, iters)
        steps = spy_steps(optim)
        for i in range(iters):
            seed_all(i)
            model.train_step(batch(i), optim)
        schedules[augsub] = (steps, optim._inner_count)
        if augsub:
            trained = params_of(model)
    assert schedules[True] == schedules[False] == ([2, 4, 5], iters)

    # The same updates by hand: SGD on the sum over each window of
    # (main + sub) / 2, divided by the window's accumulation factor.
    ref = build(True, 'joint')
    sgd = torch.optim.SGD(ref.parameters(), lr=0.1)
    for window in ([0, 1], [2, 3], [4]):
        sgd.zero_grad()
        for i in window:
            seed_all(i)
            data = ref.data_preprocessor(batch(i), True)
            main, sub = ref(data['inputs'], data['data_samples'],
                            mode='augsub_joint',
                            # The run's seed, taken at its first step
                            # (seed_all(0)), whatever is reseeded later.
                            sub_seed=sub_pass_seed(i, base_seed=0))
            loss = (ref.parse_losses(main)[0] + ref.parse_losses(sub)[0]) / 2
            (loss / len(window)).backward()
        sgd.step()
    for name, value in params_of(ref).items():
        torch.testing.assert_close(trained[name], value, rtol=1e-5,
                                   atol=1e-6, msg=name)


# -- AMP ----------------------------------------------------------------------
def amp_wrapper(model, init_scale):
    """AmpOptimWrapper on the CPU: mmengine refuses to build one without
    CUDA, so the check is patched, and its CUDA GradScaler (which disables
    itself without CUDA) is replaced by torch's CPU GradScaler, spied on."""
    path = 'mmengine.optim.optimizer.amp_optimizer_wrapper.is_cuda_available'
    with patch(path, return_value=True), warnings.catch_warnings():
        warnings.simplefilter('ignore')  # "CUDA is not available"
        optim = AmpOptimWrapper(
            optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
            clip_grad=dict(max_norm=1.0))
    optim.loss_scaler = MagicMock(
        wraps=torch.amp.GradScaler('cpu', init_scale=init_scale))
    return optim


def test_amp_shares_one_loss_scale_and_steps_once():
    grads_at_step = {}
    for init_scale in (1., 2.**10):
        model = build()
        optim = amp_wrapper(model, init_scale)
        clip = MagicMock(wraps=optim._clip_grad)
        optim._clip_grad = clip
        step = optim.optimizer.step

        def recording_step(*args, _scale=init_scale, **kwargs):
            grads_at_step[_scale] = {n: p.grad.clone()
                                     for n, p in model.named_parameters()
                                     if p.grad is not None}
            return step(*args, **kwargs)

        optim.optimizer.step = recording_step
        seed_all(0)
        model.train_step(batch(0), optim)
        scaler = optim.loss_scaler
        # Both backward passes scale their loss with the one scaler, and the
        # scaler unscales, steps and updates once, after both.
        assert scaler.scale.call_count == 2
        assert scaler.unscale_.call_count == 1
        assert scaler.step.call_count == 1
        assert scaler.update.call_count == 1
        assert clip.call_count == 1
        assert optim._inner_count == 1
    # Gradients seen by the optimizer (unscaled) do not depend on the scale:
    # a pass scaled differently from the other would change them.
    small, large = grads_at_step[1.], grads_at_step[2.**10]
    assert small.keys() == large.keys() and small
    for name in small:
        torch.testing.assert_close(large[name], small[name], rtol=1e-3,
                                   atol=1e-6, msg=name)


# -- EMA ----------------------------------------------------------------------
def test_ema_updates_once_per_iteration(tiny_configs, image_folder, tmp_path):
    cfg = Config.fromfile(osp.join(tiny_configs, 'vit-tiny_augmask_toy.py'))
    cfg.merge_from_dict(data_root_options(image_folder))
    cfg.work_dir = str(tmp_path)
    cfg.train_cfg = dict(by_epoch=True, max_epochs=1, val_interval=10)
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=10)
    cfg.custom_hooks = [dict(type='EMAHook', momentum=0.01,
                             priority='ABOVE_NORMAL')]
    runner = Runner.from_cfg(cfg)
    runner.train()
    ema_hook = next(h for h in runner.hooks if type(h).__name__ == 'EMAHook')
    assert runner.iter == 4  # 32 images, batch 8
    assert int(ema_hook.ema_model.steps) == runner.iter


# -- DDP ----------------------------------------------------------------------
def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def ddp_worker(rank, world_size, port, out_dir, counts, iters):
    import torch.distributed as dist
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

    from augsub_mm.models.wrappers import AugSubDistributedDataParallel
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    dist.init_process_group('gloo', rank=rank, world_size=world_size)
    torch.set_num_threads(1)
    model = build()
    ddp = AugSubDistributedDataParallel(model)
    optim = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1),
                         accumulative_counts=counts)
    optim.initialize_count_status(ddp, 0, iters)

    allreduces, forwards = [], []

    def counting_allreduce(state, bucket):
        allreduces.append(optim._inner_count)
        return default_hooks.allreduce_hook(state, bucket)

    ddp.register_comm_hook(None, counting_allreduce)
    model.register_forward_pre_hook(
        lambda m, args, kwargs: forwards.append(
            (kwargs.get('mode'), ddp.require_backward_grad_sync)),
        with_kwargs=True)

    # A plain synced backward: how many buckets one all-reduce has.
    seed_all(100)
    data = model.data_preprocessor(batch(100), True)
    for _ in range(2):  # the second, after DDP has rebuilt its buckets
        allreduces.clear()
        losses, _ = ddp(data['inputs'], data['data_samples'],
                        mode='augsub_main')
        model.parse_losses(losses)[0].backward()
    buckets = len(allreduces)
    optim.zero_grad()
    allreduces.clear()
    forwards.clear()

    for i in range(iters):
        seed_all(10 * i + rank)  # other images and masks on each rank
        ddp.train_step(batch(10 * i + rank), optim)
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])
    gathered = [torch.empty_like(flat) for _ in range(world_size)]
    dist.all_gather(gathered, flat)
    with open(osp.join(out_dir, f'rank{rank}.json'), 'w') as f:
        json.dump(dict(buckets=buckets, allreduces=allreduces,
                       forwards=forwards,
                       ranks_equal=all(torch.equal(g, flat)
                                       for g in gathered)), f)
    # Without it, a rank sometimes aborted at exit, after its results were
    # written ("terminate called without an active exception", gloo).
    dist.barrier()
    dist.destroy_process_group()


@pytest.mark.parametrize('counts', [1, 2])
def test_ddp_main_pass_unsynced_and_one_allreduce_per_update(tmp_path,
                                                              counts):
    iters = 2
    mp.start_processes(ddp_worker,
                       args=(2, free_port(), str(tmp_path), counts, iters),
                       nprocs=2, start_method='spawn')
    for rank in range(2):
        with open(tmp_path / f'rank{rank}.json') as f:
            result = json.load(f)
        buckets = result['buckets']
        assert buckets >= 1
        # The main pass never syncs; the sub pass syncs on update
        # iterations only (the optimizer wrapper's no_sync otherwise).
        synced = [(i + 1) % counts == 0 for i in range(iters)]
        assert result['forwards'] == [
            f for s in synced
            for f in (['augsub_main', False], ['augsub_sub', s])
        ]
        # One all-reduce (of every bucket) per update, after pass 2.
        updates = [i + 1 for i in range(iters) if synced[i]]
        assert result['allreduces'] == [
            n - 1 for n in updates for _ in range(buckets)
        ]
        # Ranks saw different images and masks: equal parameters mean the
        # summed gradient of both passes was averaged, not just pass 2's.
        assert result['ranks_equal']



def same_seed_worker(rank, world_size, port, out_dir):
    """Both ranks seeded alike (a config without diff_rank_seed), the same
    batch: the sub pass still draws different masks on each rank."""
    import torch.distributed as dist

    from augsub_mm.models.utils import masking
    from augsub_mm.models.wrappers import AugSubDistributedDataParallel
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    dist.init_process_group('gloo', rank=rank, world_size=world_size)
    torch.set_num_threads(1)
    model = build()
    ddp = AugSubDistributedDataParallel(model)
    optim = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1))
    drawn = []
    keep = masking.random_keep_indices

    def recording(*args, **kwargs):
        drawn.append(keep(*args, **kwargs))
        return drawn[-1]

    with patch.object(masking, 'random_keep_indices', recording):
        seed_all(0)
        ddp.train_step(batch(0), optim)
    gathered = [torch.empty_like(drawn[0]) for _ in range(world_size)]
    dist.all_gather(gathered, drawn[0])
    with open(osp.join(out_dir, f'rank{rank}.json'), 'w') as f:
        json.dump(dict(same=torch.equal(gathered[0], gathered[1])), f)
    dist.barrier()
    dist.destroy_process_group()


def test_ranks_draw_different_masks_whatever_the_seed_config(tmp_path):
    mp.start_processes(same_seed_worker,
                       args=(2, free_port(), str(tmp_path)),
                       nprocs=2, start_method='spawn')
    for rank in range(2):
        with open(tmp_path / f'rank{rank}.json') as f:
            assert json.load(f)['same'] is False
