"""Distributed AugSub training on the CPU (gloo), launched as a user would:
``tools/dist_train.sh CONFIG 2``. After training, both ranks must hold the
same parameters (one all-reduce of the summed main + sub gradient per
iteration) while each drew its own masks. mmengine's plain
DDP wrapper must fail loudly instead of training without the sub-model."""
import os.path as osp

import pytest
import torch
import torch.multiprocessing as mp
from tool_runner import (AUGMASK_CFG, REPO, data_options, final_lines,
                         free_port, run, tool_env)


def dist_train(cfg: str, work_dir: str, images: str, **options):
    """1 epoch on 2 CPU processes, on a free port (tests run in parallel)."""
    env = dict(tool_env(), PORT=str(free_port()))
    return run(['bash', 'tools/dist_train.sh', cfg, '2', '--work-dir',
                work_dir, '--no-validate',
                *data_options(images, splits=('train', ),
                              **{'train_cfg.max_epochs': 1}, **options)],
               env=env)


def probe_config(tmp_path) -> str:
    """The AugMask toy config with the probe hook of augsub_probe.py."""
    path = tmp_path / 'probe_cfg.py'
    path.write_text(
        f'_base_ = [{AUGMASK_CFG!r}]\n'
        "custom_imports = dict(imports=['augsub_mm', 'augsub_probe'], "
        'allow_failed_imports=False)\n'
        "custom_hooks = [dict(type='AugSubProbeHook')]\n")
    return str(path)


def probes(work_dir: str):
    return [torch.load(osp.join(work_dir, f'probe_rank{rank}.pt'))
            for rank in (0, 1)]


def test_ranks_stay_identical_and_draw_their_own_masks(tmp_path,
                                                       image_folder):
    work_dir = str(tmp_path / 'work')
    proc = dist_train(probe_config(tmp_path), work_dir, image_folder)
    assert proc.returncode == 0, proc.stdout
    assert 'loss_sub' in proc.stdout
    # Rank 0 alone reports.
    assert final_lines(proc.stdout)['Checkpoint'] == [
        osp.join(work_dir, 'epoch_1.pth')]
    rank0, rank1 = probes(work_dir)
    assert rank0['wrapper'] == rank1['wrapper'] == \
        'AugSubDistributedDataParallel'
    # 32 images, 2 ranks x batch 8: 2 iterations, one sub forward each.
    assert len(rank0['kept']) == len(rank1['kept']) == 2
    for kept0, kept1 in zip(rank0['kept'], rank1['kept']):
        assert kept0.shape == kept1.shape == (8, 8)  # 16 tokens, half kept
        assert not torch.equal(kept0, kept1)
    assert torch.equal(rank0['params'], rank1['params'])


def test_ranks_draw_their_own_masks_without_diff_rank_seed(tmp_path,
                                                           image_folder):
    """A hand-written config that leaves every rank the same seed still
    trains with different masks per rank: the sub pass's stream is seeded
    by (seed, rank, iteration)."""
    work_dir = str(tmp_path / 'work')
    proc = dist_train(probe_config(tmp_path), work_dir, image_folder,
                      **{'randomness.diff_rank_seed': False})
    assert proc.returncode == 0, proc.stdout
    rank0, rank1 = probes(work_dir)
    assert len(rank0['kept']) == 2
    for kept0, kept1 in zip(rank0['kept'], rank1['kept']):
        assert not torch.equal(kept0, kept1)
    assert torch.equal(rank0['params'], rank1['params'])


def _train_step_under(rank: int, init_file: str, out: str):
    """One training step of the AugMask toy model under each of WRAPPERS,
    on one 2-process gloo group; writes the log variables or the error."""
    import sys
    sys.path.insert(0, REPO)
    import augsub_mm  # noqa: F401
    from mmengine.config import Config
    from mmengine.optim import OptimWrapper
    from mmengine.registry import MODEL_WRAPPERS
    from mmpretrain.registry import MODELS
    from mmpretrain.structures import DataSample

    torch.distributed.init_process_group(
        'gloo', init_method=f'file://{init_file}', rank=rank, world_size=2)
    try:
        for wrapper in WRAPPERS:
            torch.manual_seed(rank)
            model = MODELS.build(Config.fromfile(AUGMASK_CFG).model)
            ddp = MODEL_WRAPPERS.build(
                dict(type=wrapper, module=model, device_ids=None))
            optim = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1))
            data = dict(
                inputs=[torch.randint(0, 255, (3, 32, 32), dtype=torch.uint8)
                        for _ in range(4)],
                data_samples=[DataSample().set_gt_label(c)
                              for c in range(4)])
            try:
                result = sorted(ddp.train_step(data, optim))
            except RuntimeError as error:
                result = str(error)
            torch.save(result, f'{out}_{wrapper}_{rank}.pt')
            # Both ranks are done with this wrapper before the next one
            # builds its own (DDP's constructor broadcasts the weights).
            torch.distributed.barrier()
    finally:
        torch.distributed.destroy_process_group()


#: The plain DDP wrapper and, as its control, ours: same model, data and
#: group (one launch for both: each costs the imports of two interpreters).
WRAPPERS = ('MMDistributedDataParallel', 'AugSubDistributedDataParallel')


@pytest.fixture(scope='module')
def step_results(tmp_path_factory) -> dict:
    """{wrapper: [result of each rank]}."""
    tmp = tmp_path_factory.mktemp('train_step_under')
    out = str(tmp / 'result')
    mp.start_processes(
        _train_step_under,
        args=(str(tmp / 'init'), out),
        nprocs=2,
        start_method='spawn')
    return {wrapper: [torch.load(f'{out}_{wrapper}_{rank}.pt')
                      for rank in (0, 1)] for wrapper in WRAPPERS}


def test_plain_ddp_wrapper_fails_loudly(step_results):
    for result in step_results['MMDistributedDataParallel']:
        assert isinstance(result, str), result
        assert 'the model wrapper runs its own training step and would ' \
            'skip the sub-model. Add to your config: model_wrapper_cfg = ' \
            "dict(type='AugSubDistributedDataParallel')" in result


def test_augsub_wrapper_runs_the_same_step(step_results):
    """Control for the test above: same model, data and group, the AugSub
    wrapper trains both branches."""
    for result in step_results['AugSubDistributedDataParallel']:
        assert isinstance(result, list), result
        assert {'loss', 'loss_sub'} <= set(result)
