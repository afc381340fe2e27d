"""Bytes communicated per training iteration: AugSub against the baseline.

For data-parallel training on 2 processes (gloo, CPU), counts what each rank
hands to the collectives of one iteration of `Augmenting Sub-model to
Improve Main Model <https://arxiv.org/abs/2306.11339>`_ (AugMask, ratio 0.5)
and of the plain model, with communication hooks:

- DDP: a comm hook around ``allreduce_hook`` counts the gradient buckets
  all-reduced (one bucket = its bytes);
- FSDP: a comm hook around ``reduce_scatter_hook`` counts the unsharded
  gradients reduce-scattered, and counters around the all-gather functions
  FSDP calls the parameters it all-gathers (forward, and backward for the
  units resharded after forward).

Cases: the baseline (mmengine's wrapper, ``ImageClassifier``); AugSub's step
(our wrapper); the two-backward step of the authors' code (both backward
passes synced: DDP's main pass without ``no_sync``); FSDP's AugSub step with
``sync_main_pass=True`` (default) and ``False``, with the gradient bytes a
rank holds between the two passes. Bytes are those of one iteration after
two warm-up iterations (DDP rebuilds its buckets after the first); they do
not depend on batch or image size, only on the parameters.

Example::

    python tools/analysis_tools/augsub_comm.py --arch deit-small \\
        --out work_dirs/augsub_comm.json
"""
import argparse
import json
import os
import socket
from contextlib import nullcontext

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

CASES = ('ddp_baseline', 'ddp_augsub', 'ddp_two_backward', 'fsdp_baseline',
         'fsdp_augsub', 'fsdp_augsub_no_sync_main')
WORLD = 2
COLLECTIVES = ('all_reduce', 'reduce_scatter', 'all_gather')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--arch', default='deit-small',
                        help="mmpretrain VisionTransformer arch (default "
                        "'deit-small', 22M parameters)")
    parser.add_argument('--img-size', type=int, default=64,
                        help='image side in pixels; the bytes do not depend '
                        'on it (default 64, to keep the CPU run short)')
    parser.add_argument('--iters', type=int, default=3,
                        help='iterations per case; the last is reported')
    parser.add_argument('--cases', nargs='+', default=list(CASES),
                        choices=CASES)
    parser.add_argument('--out', help='write the results as JSON here')
    return parser.parse_args(argv)


def model_cfg(augsub: bool, arch: str, img_size: int) -> dict:
    from mmpretrain.models import VisionTransformer
    cfg = dict(
        type='ImageClassifier',
        backbone=dict(type='VisionTransformer', arch=arch, img_size=img_size,
                      patch_size=16, drop_path_rate=0.1),
        head=dict(type='VisionTransformerClsHead', num_classes=10,
                  in_channels=VisionTransformer.arch_zoo[arch]['embed_dims']),
        data_preprocessor=dict(num_classes=10, mean=[127.5] * 3,
                               std=[127.5] * 3))
    if augsub:
        cfg.update(type='AugSubClassifier',
                   augsub=dict(type='AugMask', ratio=0.5))
    return cfg


def batch(rank: int, img_size: int, n: int = 2) -> dict:
    from mmpretrain.structures import DataSample
    g = torch.Generator().manual_seed(rank)
    return dict(
        inputs=[torch.randint(0, 256, (3, img_size, img_size), generator=g,
                              dtype=torch.uint8) for _ in range(n)],
        data_samples=[DataSample().set_gt_label(i % 10) for i in range(n)])


def nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def wrap(case: str, model, counts: dict):
    from mmengine.model import (MMDistributedDataParallel,
                                MMFullyShardedDataParallel)
    from torch.distributed.algorithms._comm_hooks import default_hooks as fh
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

    from augsub_mm.models.wrappers import (AugSubDistributedDataParallel,
                                           AugSubFullyShardedDataParallel)

    if case.startswith('ddp'):
        if case == 'ddp_baseline':
            wrapper = MMDistributedDataParallel(model, device_ids=None)
        else:
            wrapper = AugSubDistributedDataParallel(model)
        if case == 'ddp_two_backward':
            # The authors' code: both backward passes all-reduce.
            wrapper.augsub_main_pass_context = nullcontext

        def counting_allreduce(state, bucket):
            counts['all_reduce'] += nbytes(bucket.buffer())
            return default_hooks.allreduce_hook(state, bucket)

        wrapper.register_comm_hook(None, counting_allreduce)
        return wrapper

    policy = dict(
        type='torch.distributed.fsdp.wrap.size_based_auto_wrap_policy',
        min_num_params=int(1e6))
    if case == 'fsdp_baseline':
        wrapper = MMFullyShardedDataParallel(
            model, device_id=torch.device('cpu'), auto_wrap_policy=policy)
    else:
        wrapper = AugSubFullyShardedDataParallel(
            model, auto_wrap_policy=policy,
            sync_main_pass=case == 'fsdp_augsub')

    def counting_reduce_scatter(state, grad, output):
        counts['reduce_scatter'] += nbytes(grad)
        return fh.reduce_scatter_hook(state, grad, output)

    wrapper.register_comm_hook(fh.DefaultState(dist.group.WORLD),
                               counting_reduce_scatter)
    return wrapper


def count_all_gathers(counts: dict) -> None:
    """Count the bytes FSDP all-gathers: it calls ``dist.all_gather`` for
    CPU tensors and ``dist.all_gather_single`` otherwise (torch 2.14)."""
    gather, gather_single = dist.all_gather, dist.all_gather_single

    def counting_gather(tensor_list, *args, **kwargs):
        counts['all_gather'] += sum(nbytes(t) for t in tensor_list)
        return gather(tensor_list, *args, **kwargs)

    def counting_gather_single(output, *args, **kwargs):
        counts['all_gather'] += nbytes(output)
        return gather_single(output, *args, **kwargs)

    dist.all_gather = counting_gather
    dist.all_gather_single = counting_gather_single


def worker(rank: int, port: int, case: str, args, queue) -> None:
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    dist.init_process_group('gloo', rank=rank, world_size=WORLD)
    torch.set_num_threads(1)
    try:
        import augsub_mm  # noqa: F401
        from mmengine.optim import OptimWrapper
        from mmpretrain.registry import MODELS

        counts = dict(all_reduce=0, reduce_scatter=0, all_gather=0)
        count_all_gathers(counts)
        torch.manual_seed(0)
        model = MODELS.build(
            model_cfg(case.split('_')[1] != 'baseline', args.arch,
                      args.img_size))
        params = sum(nbytes(p) for p in model.parameters())
        wrapper = wrap(case, model, counts)
        optim = OptimWrapper(torch.optim.SGD(wrapper.parameters(), lr=0.01))
        held = []
        if case.startswith('fsdp') and case != 'fsdp_baseline':
            from torch.distributed.fsdp import FullyShardedDataParallel

            # Gradient bytes of FSDP's flat parameters on this rank when the
            # sub pass starts: shards, or whole gradients under no_sync.
            def record(module, args, kwargs):
                if kwargs.get('mode') == 'augsub_sub':
                    held.append(sum(
                        nbytes(unit._handle.flat_param.grad)
                        for unit in FullyShardedDataParallel.fsdp_modules(
                            wrapper) if unit._handle is not None
                        and unit._handle.flat_param.grad is not None))
            model.register_forward_pre_hook(record, with_kwargs=True)
        for _ in range(args.iters):
            for key in counts:
                counts[key] = 0
            wrapper.train_step(batch(rank, args.img_size), optim)
        result = dict(case=case, rank=rank, param_bytes=params, **counts)
        if held:
            result['grad_bytes_held'] = held[-1]
        queue.put(result)
        dist.barrier()
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def measure(case: str, args) -> dict:
    ctx = mp.get_context('spawn')
    queue = ctx.SimpleQueue()
    mp.start_processes(worker, args=(free_port(), case, args, queue),
                       nprocs=WORLD, start_method='spawn')
    results = [queue.get() for _ in range(WORLD)]
    return next(r for r in results if r['rank'] == 0)


def mb(value: int) -> str:
    return f'{value / 2**20:.1f}'


def table(results: list) -> str:
    base = {r['case'].split('_')[0]: r for r in results
            if r['case'].endswith('baseline')}
    lines = ['| case | all-reduce MB | reduce-scatter MB | all-gather MB '
             '| total / baseline | gradient MB held between passes |',
             '|---|---|---|---|---|---|']
    for r in results:
        total = sum(r[k] for k in COLLECTIVES)
        ref = base.get(r['case'].split('_')[0])
        ratio = '' if ref is None else \
            f"{total / sum(ref[k] for k in COLLECTIVES):.2f}"
        held = mb(r['grad_bytes_held']) if 'grad_bytes_held' in r else ''
        lines.append(f"| {r['case']} | {mb(r['all_reduce'])} | "
                     f"{mb(r['reduce_scatter'])} | {mb(r['all_gather'])} | "
                     f'{ratio} | {held} |')
    return '\n'.join(lines)


def main(argv=None) -> None:
    args = parse_args(argv)
    results = [measure(case, args) for case in args.cases]
    print(f"Parameters: {mb(results[0]['param_bytes'])} MB "
          f'({args.arch}, fp32); per rank, one iteration, {WORLD} ranks')
    print(table(results))
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(results, f, indent=1)


if __name__ == '__main__':
    main()
