"""AugMask on Swin under DDP (2 processes, gloo): the mask token is used in
the synced (sub) pass only, so no find_unused_parameters is needed, and
both ranks end with identical parameters while drawing their own masks."""
import os
import os.path as osp
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from conftest import REPO, make_image_folder
from test_configs import tiny_version

CONFIG = osp.join(REPO, 'configs', 'swin', 'swin-tiny_16xb64-augmask_in1k.py')
WORLD = 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def train_rank(rank, port, data_root, out_dir):
    from mmengine.runner import Runner
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port),
                      RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(WORLD))
    # gloo started here: mmengine's init_dist would call cuda.set_device.
    dist.init_process_group('gloo', rank=rank, world_size=WORLD)
    cfg = tiny_version(CONFIG, data_root, osp.join(out_dir, 'work'))
    cfg.launcher = 'pytorch'
    for split in ('train', 'val', 'test'):
        cfg[f'{split}_dataloader'].batch_size = 2
    runner = Runner.from_cfg(cfg)
    model = runner.model.module
    assert type(runner.model).__name__ == 'AugSubDistributedDataParallel'
    assert not runner.model.find_unused_parameters
    token = model.augsub.mask_token
    masks = []

    def record(module, args):
        is_token = (args[0] == token).all(-1)
        if is_token.any():  # the sub pass
            masks.append(is_token.detach().clone())

    model.backbone.stages[0].register_forward_pre_hook(record)
    start = token.detach().clone()
    runner.train()
    torch.save(dict(state_dict=model.state_dict(), iters=runner.iter,
                    start=start, first_mask=masks[0]),
               osp.join(out_dir, f'rank{rank}.pth'))
    dist.destroy_process_group()


def test_two_ranks_end_identical(tmp_path):
    # 12 images, 2 per rank and batch: 3 iterations on each rank.
    data_root = make_image_folder(str(tmp_path / 'images'), per_class=3)
    mp.spawn(train_rank, args=(free_port(), data_root, str(tmp_path)),
             nprocs=WORLD, join=True)
    ranks = [torch.load(str(tmp_path / f'rank{r}.pth'), weights_only=True)
             for r in range(WORLD)]
    assert [r['iters'] for r in ranks] == [3, 3]
    a, b = (r['state_dict'] for r in ranks)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    # The token trained, and each rank drew its own masks.
    assert not torch.equal(a['augsub.mask_token'], ranks[0]['start'])
    assert torch.equal(ranks[0]['start'], ranks[1]['start'])
    assert not torch.equal(ranks[0]['first_mask'], ranks[1]['first_mask'])
