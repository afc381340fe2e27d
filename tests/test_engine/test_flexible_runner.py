"""AugSub under mmengine's FlexibleRunner, on 2 CPU processes (gloo),
launched as a user would: ``tools/dist_train.sh CONFIG 2``.

FlexibleRunner with DDPStrategy and with FSDPStrategy (our strategy and
wrapper, put in place by ``prepare_augsub_config``) must train a toy ViT and
a toy Swin with AugMask to the weights of the same run under the default
Runner + DDP; an FSDP run saved, resumed and continued must end with the
weights of an uninterrupted one."""
import importlib.util
import os.path as osp
import sys
from typing import Optional

import pytest
import torch
from mmengine.config import Config

from conftest import REPO, SIDE_SITES, make_image_folder

sys.path.insert(0, osp.join(REPO, 'tests', 'test_tools'))
from tool_runner import (AUGMASK_CFG, data_options, free_port,  # noqa: E402
                         run, run_train, tool_env)

HERE = osp.dirname(osp.abspath(__file__))
SWIN_CFG = osp.join(REPO, 'configs', 'swin',
                    'swin-tiny_16xb64-augmask_in1k.py')
PROBE = ("custom_imports = dict(imports=['augsub_mm', 'flexible_probe'], "
         'allow_failed_imports=False)\n'
         "custom_hooks = [dict(type='FlexibleProbeHook')]\n")
FLEXIBLE = "runner_type = 'FlexibleRunner'\n"
# Nested FSDP units (each ViT layer / Swin stage its own), as the zoo's
# size-based policy makes of ViT-L: parameter names gain
# `_fsdp_wrapped_module.` inside the model, not only at the top.
FSDP = ("strategy = dict(type='FSDPStrategy', model_wrapper=dict("
        'auto_wrap_policy=dict(type='
        "'torch.distributed.fsdp.wrap.size_based_auto_wrap_policy', "
        'min_num_params=1000)))\n')
ENGINES = {
    'runner_ddp': '',
    'flexible_ddp': FLEXIBLE + "strategy = dict(type='DDPStrategy')\n",
    'flexible_fsdp': FLEXIBLE + FSDP,
}
# The weight comparisons train with SGD + momentum: Adam's update does not
# change with the scale of the gradient (a pass counted twice or a wrong
# average would go unseen) and magnifies the float noise of near-zero
# gradients; the resume tests keep the recipe's AdamW (two states per
# parameter to restore).
ADAMW = "type='AdamW', lr=1e-3, weight_decay=0.05"
SGD = "type='SGD', lr=0.1, momentum=0.9, weight_decay=1e-4"


# The toy recipe under DeepSpeed: its optimizer wrapper, gradient clipping in
# the engine (the recipe's max_norm, never active here; write_config's `clip`
# sets another).
DEEPSPEED = FLEXIBLE + (
    "optim_wrapper = dict(_delete_=True, type='DeepSpeedOptimWrapper', "
    f'optimizer=dict({ADAMW}))\n'

    "strategy = dict(type='DeepSpeedStrategy', gradient_clipping=5.0, "
    'zero_optimization=dict(stage={stage}, overlap_comm=True, '
    'contiguous_gradients=True))\n')
for _stage in (1, 2, 3):
    ENGINES[f'deepspeed_zero{_stage}'] = DEEPSPEED.format(stage=_stage)
# DeepSpeed is not in the project's requirements; these tests run where it
# is installed (see docs/performance.md for the interpreter we used).
needs_deepspeed = pytest.mark.skipif(
    importlib.util.find_spec('deepspeed') is None,
    reason='DeepSpeed is not installed')


def write_config(tmp_path, base: str, engine: str, name: str,
                 sgd: bool = False, clip: Optional[float] = None) -> str:
    """``clip``: the gradient norm clipped to (the toy recipe's 5.0, never
    reached, if None)."""
    text = ENGINES[engine]
    deepspeed = engine.startswith('deepspeed')
    if deepspeed and clip is not None:
        text = text.replace('gradient_clipping=5.0',
                            f'gradient_clipping={clip}')
    if sgd and deepspeed:
        # DeepSpeed tests its ZeRO optimizers with Adam/Lamb only.
        text = text.replace(ADAMW, SGD).replace(
            "strategy = dict(type='DeepSpeedStrategy', ",
            "strategy = dict(type='DeepSpeedStrategy', config=dict("
            'zero_allow_untested_optimizer=True), ')
    elif not deepspeed and (sgd or clip is not None):
        # One assignment: a second `optim_wrapper = ...` in the same file
        # would replace the first, not merge with it.
        optim = [f'optimizer=dict(_delete_=True, {SGD})'] if sgd else []
        if clip is not None:
            optim.append(f'clip_grad=dict(max_norm={clip})')
        text += f'optim_wrapper = dict({", ".join(optim)})\n'
    path = tmp_path / f'{name}.py'
    path.write_text(f'_base_ = [{base!r}]\n' + PROBE + text)
    return str(path)


def dist_train(cfg: str, work_dir: str, *args: str, **options):
    # DeepSpeed from the test environment's side folder (tests/conftest.py)
    # where it is kept there: the DeepSpeed launches need it.
    sites = [s for s in SIDE_SITES if s.endswith('ds-site') and osp.isdir(s)]
    env = dict(tool_env(), PORT=str(free_port()), PYTHONPATH=':'.join(
        [HERE, tool_env()['PYTHONPATH'], *sites]))
    cfg_options = [f'{k}={v}' for k, v in options.items()]
    return run(['bash', 'tools/dist_train.sh', cfg, '2', '--work-dir',
                work_dir, '--no-validate', *args,
                *(['--cfg-options', *cfg_options] if cfg_options else [])],
               env=env, timeout=300)


def probes(work_dir: str):
    return [torch.load(osp.join(work_dir, f'probe_rank{rank}.pt'),
                       weights_only=False) for rank in (0, 1)]


def assert_same_weights(a: dict, b: dict, rtol: float = 1e-5,
                        atol: float = 1e-6) -> None:
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=rtol, atol=atol,
                                   msg=lambda m, name=name: f'{name}: {m}')


# -- toy ViT (AugMask: token dropping) --------------------------------------
#: The gradient norm the ViT runs clip to: below the gradient's (0.31 and
#: 0.37 at the 2 iterations), so that each update is clipped. Before FSDP
#: clipped by the global norm, its ranks logged 0.0 and 0.31 at the first
#: (rank 0's shard then has no gradient: the head starts at zero) and the
#: weights were 12.8% of the update off DDP's.
VIT_CLIP = 0.1


@pytest.fixture(scope='module')
def vit_runs(tmp_path_factory, image_folder):
    """The AugMask toy ViT, 1 epoch (2 iterations per rank), under each
    engine, its gradient clipped (VIT_CLIP). The config is the plain one plus
    the four switch-on lines: the FlexibleRunner runs get the wrapper in
    their strategy from prepare_augsub_config."""
    tmp = tmp_path_factory.mktemp('vit')
    runs = {}
    for engine in ('runner_ddp', 'flexible_ddp', 'flexible_fsdp'):
        cfg = write_config(tmp, AUGMASK_CFG, engine, engine, sgd=True,
                           clip=VIT_CLIP)
        work_dir = str(tmp / engine)
        proc = dist_train(
            cfg, work_dir, **{
                'train_dataloader.dataset.data_root': image_folder,
                'train_cfg.max_epochs': 1})
        assert proc.returncode == 0, proc.stdout[-6000:]
        runs[engine] = (proc.stdout, probes(work_dir))
    return runs


def test_vit_flexible_runner_logs_both_losses(vit_runs):
    for engine, (out, (rank0, rank1)) in vit_runs.items():
        assert 'loss: ' in out and 'loss_sub: ' in out, engine
        assert rank0['iter'] == rank1['iter'] == 2
    assert vit_runs['flexible_ddp'][1][0]['wrapper'] == \
        'AugSubDistributedDataParallel'
    assert vit_runs['flexible_fsdp'][1][0]['wrapper'] == \
        'AugSubFullyShardedDataParallel'
    assert vit_runs['flexible_fsdp'][1][0]['strategy'] == 'AugSubFSDPStrategy'


@pytest.mark.parametrize('engine', ['flexible_ddp', 'flexible_fsdp'])
def test_vit_weights_equal_runner_ddp(vit_runs, engine):
    reference = vit_runs['runner_ddp'][1][0]['params']
    for rank in vit_runs[engine][1]:
        assert_same_weights(rank['params'], reference)
        assert_same_weights(rank['start'],
                            vit_runs['runner_ddp'][1][0]['start'])
    # It trained.
    start = vit_runs['runner_ddp'][1][0]['start']
    assert any(not torch.equal(v, start[k]) for k, v in reference.items())


@pytest.mark.parametrize('engine', ['flexible_ddp', 'flexible_fsdp'])
def test_vit_clips_by_the_global_grad_norm(vit_runs, engine):
    """Each rank logs (``grad_norm``) and clips by the norm of the whole
    gradient, as under the Runner's DDP, whose ranks each hold the whole
    (all-reduced) gradient: the norm mmengine's clipping computes there is
    the global one. FSDP's ranks hold shards of it."""
    reference = vit_runs['runner_ddp'][1][0]['grad_norms']
    assert len(reference) == 2 and min(reference) > VIT_CLIP
    for rank in vit_runs['runner_ddp'][1] + vit_runs[engine][1]:
        assert rank['grad_norms'] == pytest.approx(reference, rel=1e-5)
        # What each step applied: the whole gradient, clipped to VIT_CLIP.
        assert rank['applied_norms'] == pytest.approx([VIT_CLIP] * 2,
                                                      rel=1e-5)


def timm_run(tmp, image_folder, engine):
    """A timm ViT (TimmClassifier config plus the four lines), 1 epoch (2
    iterations per rank) under ``engine``, its gradient clipped; the
    probes of its ranks."""
    from tool_runner import CONFIGS
    base = osp.join(CONFIGS, 'timm-vit-tiny_augmask_toy.py')
    cfg = write_config(tmp, base, engine, f'timm_{engine}', sgd=True,
                       clip=VIT_CLIP)
    work_dir = str(tmp / f'timm_{engine}')
    proc = dist_train(cfg, work_dir, **{
        'train_dataloader.dataset.data_root': image_folder,
        'train_cfg.max_epochs': 1})
    assert proc.returncode == 0, proc.stdout[-6000:]
    assert 'loss_sub: ' in proc.stdout
    return probes(work_dir)


@pytest.fixture(scope='module')
def timm_reference(tmp_path_factory, image_folder):
    """The timm ViT under the Runner + DDP: rank 0's probe."""
    pytest.importorskip('timm')
    reference = timm_run(tmp_path_factory.mktemp('timm'), image_folder,
                         'runner_ddp')[0]
    assert reference['iter'] == 2
    assert any(not torch.equal(v, reference['start'][k])
               for k, v in reference['params'].items())
    return reference


@pytest.mark.parametrize('engine', [
    'flexible_fsdp', pytest.param('deepspeed_zero2', marks=needs_deepspeed)])
def test_timm_vit_weights_equal_runner_ddp(timm_reference, tmp_path,
                                           image_folder, engine):
    """FlexibleRunner + FSDP (nested units) and DeepSpeed ZeRO-2 train the
    timm ViT to the weights of the Runner + DDP run."""
    ranks = timm_run(tmp_path, image_folder, engine)
    assert ranks[0]['wrapper'] == dict(
        flexible_fsdp='AugSubFullyShardedDataParallel',
        deepspeed_zero2='AugSubDeepSpeedEngineWrapper')[engine]
    for rank in ranks:
        assert rank['iter'] == 2
        assert_same_weights(rank['params'], timm_reference['params'])


@needs_deepspeed
@pytest.mark.parametrize('stage', [1, 2, 3])
def test_vit_deepspeed_weights_equal_runner_ddp(vit_runs, image_folder,
                                                 tmp_path, stage):
    engine = f'deepspeed_zero{stage}'
    work_dir = str(tmp_path / engine)
    proc = dist_train(
        write_config(tmp_path, AUGMASK_CFG, engine, engine, sgd=True,
                     clip=VIT_CLIP),
        work_dir, **{
            'train_dataloader.dataset.data_root': image_folder,
            'train_cfg.max_epochs': 1})
    assert proc.returncode == 0, proc.stdout[-6000:]
    assert 'loss: ' in proc.stdout and 'loss_sub: ' in proc.stdout
    reference = vit_runs['runner_ddp'][1][0]['params']
    for rank in probes(work_dir):
        assert rank['wrapper'] == 'AugSubDeepSpeedEngineWrapper'
        assert rank['strategy'] == 'AugSubDeepSpeedStrategy'
        assert rank['iter'] == 2
        assert_same_weights(rank['params'], reference)


def test_flexible_runner_on_one_device(image_folder, tmp_path):
    """Without a launcher, FlexibleRunner's single-device strategy becomes
    ours; the model's own step runs the sub-model."""
    cfg = write_config(tmp_path, AUGMASK_CFG, 'flexible_ddp', 'cfg')
    with open(cfg, 'a') as f:
        f.write('strategy = None\n')
    work_dir = str(tmp_path / 'work')
    env = dict(tool_env(), PYTHONPATH=HERE + ':' + tool_env()['PYTHONPATH'])
    proc = run_train(cfg, '--work-dir', work_dir, '--no-validate',
                     *data_options(image_folder, splits=('train', ),
                                   **{'train_cfg.max_epochs': 1}), env=env)
    assert proc.returncode == 0, proc.stdout[-6000:]
    assert 'loss_sub: ' in proc.stdout
    probe = torch.load(osp.join(work_dir, 'probe_rank0.pt'),
                       weights_only=False)
    assert probe['strategy'] == 'AugSubSingleDeviceStrategy'
    assert probe['wrapper'] == 'AugSubClassifier'
    assert probe['iter'] == 4  # 32 images, batch 8


# -- toy Swin (AugMask: the mask token) -------------------------------------
#: Below the gradient norm of each of the 3 iterations (3.7, 2.4, 2.6).
SWIN_CLIP = 1.0


@pytest.fixture(scope='module')
def swin_runs(tmp_path_factory):
    from test_configs import tiny_version
    tmp = tmp_path_factory.mktemp('swin')
    images = make_image_folder(str(tmp / 'images'), per_class=3)
    base = str(tmp / 'swin_tiny.py')
    cfg = tiny_version(SWIN_CFG, images, str(tmp / 'unused'))
    for split in ('train', 'val', 'test'):
        cfg[f'{split}_dataloader'].batch_size = 2
    # No warm-up (its factor 1e-3): 3 steps that move the weights well above
    # the comparison's tolerance.
    cfg.param_scheduler = []
    cfg.randomness.seed = 0  # the recipe draws one per run
    cfg.dump(base)
    runs = {}
    for engine in ('runner_ddp', 'flexible_ddp', 'flexible_fsdp'):
        work_dir = str(tmp / engine)
        proc = dist_train(write_config(tmp, base, engine, engine, sgd=True,
                                       clip=SWIN_CLIP), work_dir)
        assert proc.returncode == 0, proc.stdout[-6000:]
        runs[engine] = (proc.stdout, probes(work_dir))
    return runs


@pytest.mark.parametrize('engine', ['flexible_ddp', 'flexible_fsdp'])
def test_swin_weights_equal_runner_ddp(swin_runs, engine):
    reference = swin_runs['runner_ddp'][1][0]
    assert reference['iter'] == 3  # 12 images, 2 ranks x batch 2
    # FSDP sums Swin's gradients in another order than DDP (reduce-scatter
    # of pre-divided shards): measured up to 8.2e-6 apart (relative 8e-5)
    # after 3 SGD steps; a pass missing or counted twice changes each
    # update by that pass's whole gradient.
    tolerance = dict(rtol=1e-4, atol=1e-5) if engine == 'flexible_fsdp' \
        else {}
    for rank in swin_runs[engine][1]:
        assert rank['iter'] == 3
        assert_same_weights(rank['params'], reference['params'], **tolerance)
        # The mask token trained, out of weight decay.
        token = rank['params']['augsub.mask_token']
        assert not torch.equal(token, rank['start']['augsub.mask_token'])
        assert rank['token_decay'] == [0.]
        # Clipped by the norm of the whole gradient (under FSDP, its shards
        # and the replicated mask token, counted once).
        assert min(reference['grad_norms']) > SWIN_CLIP
        assert rank['grad_norms'] == pytest.approx(reference['grad_norms'],
                                                   rel=1e-4)
        assert rank['applied_norms'] == pytest.approx([SWIN_CLIP] * 3,
                                                      rel=1e-5)
    assert 'loss_sub: ' in swin_runs[engine][0]


# -- save, resume, continue -------------------------------------------------
# No randomness but the sub-model's (drawn per iteration from the run's
# seed, restored on resume): a resumed run re-seeds the global generators,
# so Mixup/CutMix, flips and the main pass's drop-path would draw other
# numbers than an uninterrupted run in the epochs after the resume.
# The schedule's end is fixed at epoch 2, not read from the run's
# max_epochs: a run stopped early had the same schedule.
DETERMINISTIC = """
model = dict(backbone=dict(drop_path_rate=0.0), train_cfg=None)
param_scheduler = [dict(type='CosineAnnealingLR', by_epoch=True, T_max=2,
                        end=2)]
train_dataloader = dict(dataset=dict(pipeline=[
    dict(type='LoadImageFromFile'), dict(type='PackInputs')]))
"""


@pytest.mark.parametrize('engine', [
    'flexible_ddp', 'flexible_fsdp',
    pytest.param('deepspeed_zero2', marks=needs_deepspeed)])
def test_save_resume_continue_equals_uninterrupted(engine, image_folder,
                                                   tmp_path):
    cfg = write_config(tmp_path, AUGMASK_CFG, engine, 'cfg')
    with open(cfg, 'a') as f:
        f.write(DETERMINISTIC)
    data = {'train_dataloader.dataset.data_root': image_folder,
            'train_cfg.max_epochs': 2}
    whole, parts = str(tmp_path / 'whole'), str(tmp_path / 'parts')
    proc = dist_train(cfg, whole, **data)
    assert proc.returncode == 0, proc.stdout[-6000:]
    # The interrupted run: stopped after its first epoch, resumed from the
    # checkpoint it saved then -- the uninterrupted run's, written by the
    # same hook at the same point (one launch less than training that
    # epoch again).
    proc = dist_train(cfg, parts, '--resume', osp.join(whole, 'epoch_1.pth'),
                      **data)
    assert proc.returncode == 0, proc.stdout[-6000:]
    assert 'resumed epoch: 1, iter: 2' in proc.stdout
    for resumed, uninterrupted in zip(probes(parts), probes(whole)):
        assert resumed['iter'] == uninterrupted['iter'] == 4
        assert_same_weights(resumed['params'], uninterrupted['params'])
    if engine != 'flexible_fsdp':
        return
    # FSDP's checkpoint is one file of the plain classifier's weights.
    from mmpretrain.registry import MODELS
    from tool_runner import PLAIN_CFG

    import augsub_mm  # noqa: F401  safe loading of mmengine checkpoints
    checkpoint = torch.load(osp.join(whole, 'epoch_2.pth'),
                            map_location='cpu')
    plain = MODELS.build(Config.fromfile(PLAIN_CFG).model)
    plain.load_state_dict(checkpoint['state_dict'], strict=True)
    for name, param in plain.named_parameters():
        torch.testing.assert_close(param.detach(),
                                   probes(whole)[0]['params'][name])


# -- the model zoo's FSDP / DeepSpeed MAE recipes with AugMask ---------------
ZOO = osp.join(REPO, 'configs', 'mae', 'large_models')


@pytest.mark.parametrize('name', [
    'vit-large-p16_8xb128-augmask-fsdp-coslr-50e_in1k.py',
    pytest.param('vit-large-p16_8xb128-augmask-ds-coslr-50e_in1k.py',
                 marks=needs_deepspeed)])
def test_zoo_large_model_config_trains(name, tmp_path):
    """Our config of the zoo's recipe, with a tiny ViT of the same family,
    trains with the sub-model under its engine (the recipe's layer-wise lr
    decay intact). What a CPU cannot run is switched off: AMP (fp16 needs
    CUDA) and the FSDP wrap threshold lowered so that the tiny layers are
    FSDP units of their own, as ViT-L's are."""
    from test_configs import tiny_version
    images = make_image_folder(str(tmp_path / 'images'), per_class=2)
    cfg = tiny_version(osp.join(ZOO, name), images, str(tmp_path / 'unused'))
    cfg.randomness.seed = 0
    if '-fsdp-' in name:
        cfg.optim_wrapper.type = 'OptimWrapper'
        cfg.strategy.model_wrapper.auto_wrap_policy.min_num_params = 1000
    else:
        cfg.strategy.fp16.enabled = False
    base = str(tmp_path / 'tiny.py')
    cfg.dump(base)
    config = tmp_path / 'probed.py'
    config.write_text(f'_base_ = [{base!r}]\n' + PROBE)
    work_dir = str(tmp_path / 'work')
    proc = dist_train(str(config), work_dir)
    assert proc.returncode == 0, proc.stdout[-6000:]
    assert 'loss_sub: ' in proc.stdout
    engine = 'DeepSpeed' if '-ds-' in name else 'FSDP'
    for rank in probes(work_dir):
        assert rank['strategy'] == f'AugSub{engine}Strategy'
        assert rank['iter'] == 1  # 8 images, 2 ranks x batch 4
        assert any(not torch.equal(v, rank['start'][k])
                   for k, v in rank['params'].items())
        if engine == 'FSDP':
            # The class token: depth 0 of 4 (2 layers), 0.75 ** 3, not the
            # head's 1 (FSDP's parameter names must not hide the depth).
            assert rank['backbone_lr_scale'] == [pytest.approx(0.75**3)]


# -- without our switch: never trains without the sub-model -----------------
#: (strategy, world size) of the runs without our switch.
WITHOUT_SWITCH = [('FSDPStrategy', 1), ('FSDPStrategy', 2), ('DDPStrategy', 2)]


def _train_without_switch(rank, data_root, out):
    """FlexibleRunner built directly from the AugMask toy config with
    mmengine's own strategy and wrapper (as mmpretrain's train tool would,
    without prepare_augsub_config), for each of WITHOUT_SWITCH in turn: the
    2-process runs, then rank 0 alone in a group of its own; writes the
    error each run stops with."""
    import os

    import torch.distributed as dist
    from mmengine.runner import FlexibleRunner
    for world in (2, 1):
        if rank >= world:
            break
        os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank),
                          WORLD_SIZE=str(world))
        # gloo here: mmengine's init_dist would call cuda.set_device.
        dist.init_process_group(
            'gloo', init_method=f'file://{osp.join(out, f"init{world}")}',
            rank=rank, world_size=world)
        for strategy in [s for s, w in WITHOUT_SWITCH if w == world]:
            name = f'{strategy}_{world}'
            cfg = Config.fromfile(AUGMASK_CFG)
            cfg.train_dataloader.dataset.data_root = data_root
            # A name of its own: Runners in one process share visualizer
            # and message hub instances by experiment name.
            cfg.update(launcher='pytorch', work_dir=osp.join(out, name),
                       experiment_name=f'without_switch_{name}',
                       val_cfg=None, val_dataloader=None, val_evaluator=None,
                       runner_type='FlexibleRunner')
            cfg.pop('model_wrapper_cfg')
            # CPU devices: mmengine's wrappers default to CUDA device
            # LOCAL_RANK.
            cfg.strategy = dict(type=strategy, model_wrapper=(
                dict(device_id=torch.device('cpu'))
                if strategy == 'FSDPStrategy' else
                dict(type='MMDistributedDataParallel', device_ids=None)))
            try:
                FlexibleRunner.from_cfg(cfg).train()
                result = 'trained'
            except RuntimeError as error:
                result = str(error)
            torch.save(result, osp.join(out, f'{name}_rank{rank}.pt'))
            dist.barrier()
        dist.destroy_process_group()


@pytest.fixture(scope='module')
def without_switch(tmp_path_factory, image_folder):
    """{(strategy, world): [result of each rank]}: every run of
    WITHOUT_SWITCH in one launch of 2 processes (each launch costs the
    imports of two interpreters)."""
    import torch.multiprocessing as mp
    out = tmp_path_factory.mktemp('without_switch')
    mp.start_processes(_train_without_switch, args=(image_folder, str(out)),
                       nprocs=2, start_method='spawn')
    return {(strategy, world): [
        torch.load(str(out / f'{strategy}_{world}_rank{rank}.pt'))
        for rank in range(world)] for strategy, world in WITHOUT_SWITCH}


@pytest.mark.parametrize('strategy,world', WITHOUT_SWITCH)
def test_mmengine_strategy_without_switch_refuses(strategy, world,
                                                  without_switch):
    results = without_switch[strategy, world]
    assert len(results) == world
    for result in results:
        assert 'AugSubClassifier was asked for a plain training loss' \
            in result, result


@needs_deepspeed
def test_deepspeed_gradient_accumulation_equals_runner_ddp(image_folder,
                                                           tmp_path):
    """2 iterations per update: DeepSpeed's gradient_accumulation_steps=2
    (4 micro-steps of the engine: 2 passes each) against the Runner's
    accumulative_counts=2 under DDP."""
    data = {'train_dataloader.dataset.data_root': image_folder,
            'train_cfg.max_epochs': 1}
    runs = {}
    for engine, extra in [
            ('runner_ddp', 'optim_wrapper = dict(accumulative_counts=2)\n'),
            ('deepspeed_zero2',
             'strategy = dict(gradient_accumulation_steps=2)\n')]:
        # A file of its own, so that `extra` merges into the engine's dicts.
        base = write_config(tmp_path, AUGMASK_CFG, engine, engine, sgd=True)
        cfg = tmp_path / f'{engine}_accumulating.py'
        cfg.write_text(f'_base_ = [{base!r}]\n' + extra)
        work_dir = str(tmp_path / engine)
        proc = dist_train(str(cfg), work_dir, **data)
        assert proc.returncode == 0, proc.stdout[-6000:]
        runs[engine] = probes(work_dir)
    reference = runs['runner_ddp'][0]
    assert any(not torch.equal(v, reference['start'][k])
               for k, v in reference['params'].items())
    for rank in runs['deepspeed_zero2']:
        assert rank['iter'] == 2
        assert_same_weights(rank['params'], reference['params'])
