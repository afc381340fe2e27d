"""tools/train.py and the config helpers behind --augsub: training,
resuming (from a path and automatically), never overwriting an earlier run,
switching AugSub on in a plain config, and the errors a user can act on."""
import hashlib
import os
import os.path as osp
import shutil

import pytest
import torch
from augsub_mm.config import (close_dist, enable_augsub, parse_augsub,
                              prepare_augsub_config, resolve_config,
                              setup_cpu_dist)
from mmengine.config import Config
from tool_runner import (AUGMASK_CFG, PLAIN_CFG, data_options, final_lines,
                         run_train)

DEIT3 = 'mmpretrain::deit3/deit3-small-p16_64xb64_in1k.py'
# A DeepSpeed recipe: runner_type = 'FlexibleRunner'.
MAE_DS = ('mmpretrain::mae/benchmarks/'
          'vit-large-p16_8xb128-ds-coslr-50e_in1k.py')


# -- parse_augsub -------------------------------------------------------
@pytest.mark.parametrize('spec, expected', [
    ('AugMask', dict(type='AugMask', ratio=0.5)),
    ('AugMask:0.5', dict(type='AugMask', ratio=0.5)),
    ('AugPath:0.3', dict(type='AugPath', ratio=0.3)),
    ('augdrop:0.1', dict(type='AugDrop', ratio=0.1)),
])
def test_parse_augsub(spec, expected):
    assert parse_augsub(spec) == expected


@pytest.mark.parametrize('spec, bad', [('AugCut:0.5', 'AugCut'),
                                       ('AugMask:1', "'1'"),
                                       ('AugMask:-0.1', "'-0.1'"),
                                       ('AugMask:0', "'0'"),
                                       ('AugMask:half', "'half'"),
                                       ('AugMask:', "''")])
def test_parse_augsub_errors_name_the_choices(spec, bad):
    with pytest.raises(ValueError) as info:
        parse_augsub(spec)
    message = str(info.value)
    assert bad in message
    for name in ('AugMask', 'AugDrop', 'AugPath', '(0, 1)'):
        assert name in message


# -- enable_augsub ------------------------------------------------------
def test_enable_augsub_on_model_zoo_config(tmp_path):
    cfg = Config.fromfile(resolve_config(DEIT3))
    seed = cfg.randomness.get('seed')
    assert cfg.model.type == 'ImageClassifier'
    assert enable_augsub(cfg, dict(type='AugMask', ratio=0.5)) is cfg
    assert cfg.model.type == 'AugSubClassifier'
    assert cfg.model.augsub == dict(type='AugMask', ratio=0.5)
    assert cfg.custom_imports.imports == ['augsub_mm']
    assert cfg.randomness.diff_rank_seed is True
    assert cfg.randomness.get('seed') == seed
    # The rest of the recipe is untouched.
    assert cfg.model.backbone.arch == 's'
    # The switched-on config is saved with a run: it must reload as is.
    cfg.dump(str(tmp_path / 'saved.py'))
    saved = Config.fromfile(str(tmp_path / 'saved.py'))
    assert saved.model.type == 'AugSubClassifier'
    assert saved.custom_imports.imports == ['augsub_mm']


def test_enable_augsub_builds_a_model():
    from mmpretrain.registry import MODELS
    cfg = enable_augsub(Config.fromfile(PLAIN_CFG),
                        dict(type='AugPath', ratio=0.3))
    model = MODELS.build(cfg.model)
    assert type(model).__name__ == 'AugSubClassifier'
    assert type(model.augsub).__name__ == 'AugPath'
    assert model.augsub.ratio == 0.3


def test_enable_augsub_keeps_other_imports_and_replaces_augsub():
    cfg = Config(dict(
        model=dict(type='mmpretrain.AugSubClassifier',
                   augsub=dict(type='AugMask', ratio=0.5)),
        custom_imports=dict(imports='my_pkg', allow_failed_imports=True)))
    enable_augsub(cfg, dict(type='AugDrop', ratio=0.1))
    assert cfg.model.augsub == dict(type='AugDrop', ratio=0.1)
    assert cfg.custom_imports.imports == ['my_pkg', 'augsub_mm']
    assert cfg.custom_imports.allow_failed_imports is True
    assert cfg.randomness == dict(diff_rank_seed=True)


def test_enable_augsub_refuses_other_models():
    cfg = Config(dict(model=dict(type='MAE')))
    with pytest.raises(ValueError, match=r"model.type must be 'ImageClassi"
                       r"fier'.*got 'MAE'"):
        enable_augsub(cfg, dict(type='AugMask', ratio=0.5))


# -- prepare_augsub_config ----------------------------------------------
def augsub_cfg(**top):
    return Config(dict(model=dict(type='AugSubClassifier'), **top))


def test_prepare_fills_in_the_wrapper():
    cfg = prepare_augsub_config(augsub_cfg())
    assert cfg.model_wrapper_cfg == dict(type='AugSubDistributedDataParallel')


def test_prepare_carries_find_unused_parameters_into_the_wrapper():
    cfg = prepare_augsub_config(augsub_cfg(find_unused_parameters=True))
    assert cfg.model_wrapper_cfg == dict(
        type='AugSubDistributedDataParallel', find_unused_parameters=True)
    # Also into a wrapper config the user wrote without it.
    cfg = prepare_augsub_config(augsub_cfg(
        find_unused_parameters=True,
        model_wrapper_cfg=dict(type='AugSubDistributedDataParallel',
                               broadcast_buffers=True)))
    assert cfg.model_wrapper_cfg.find_unused_parameters is True
    assert cfg.model_wrapper_cfg.broadcast_buffers is True


def test_prepare_leaves_an_explicit_wrapper_value_alone():
    cfg = prepare_augsub_config(augsub_cfg(
        find_unused_parameters=True,
        model_wrapper_cfg=dict(type='AugSubDistributedDataParallel',
                               find_unused_parameters=False)))
    assert cfg.model_wrapper_cfg.find_unused_parameters is False


def test_prepare_puts_the_recipe_constructor_under_ours():
    cfg = Config(dict(model=dict(type='AugSubClassifier'),
                      optim_wrapper=dict(
                          constructor='LearningRateDecayOptimWrapperConstructor',
                          paramwise_cfg=dict(layer_decay_rate=0.65))))
    prepare_augsub_config(cfg)
    assert cfg.optim_wrapper.constructor == 'AugSubOptimWrapperConstructor'
    assert cfg.optim_wrapper.base_constructor == \
        'LearningRateDecayOptimWrapperConstructor'
    assert cfg.optim_wrapper.paramwise_cfg.layer_decay_rate == 0.65
    # Idempotent: a second call (e.g. on a saved config) changes nothing.
    prepare_augsub_config(cfg)
    assert cfg.optim_wrapper.base_constructor == \
        'LearningRateDecayOptimWrapperConstructor'
    plain = Config(dict(model=dict(type='AugSubClassifier'),
                        optim_wrapper=dict(optimizer=dict(type='SGD'))))
    prepare_augsub_config(plain)
    assert plain.optim_wrapper.base_constructor == \
        'DefaultOptimWrapperConstructor'


def test_prepare_leaves_other_models_alone():
    cfg = Config.fromfile(PLAIN_CFG)
    before = cfg.to_dict()
    assert prepare_augsub_config(cfg).to_dict() == before
    assert 'model_wrapper_cfg' not in cfg


@pytest.mark.parametrize('wrapper', [
    dict(type='MMDistributedDataParallel'),
    dict(find_unused_parameters=True),  # mmengine's default type
])
def test_prepare_refuses_another_wrapper(wrapper):
    with pytest.raises(ValueError, match='AugSubDistributedDataParallel.*got '
                       "'MMDistributedDataParallel'"):
        prepare_augsub_config(augsub_cfg(model_wrapper_cfg=wrapper))


def test_prepare_puts_the_augsub_strategy_in_a_flexible_runner_config():
    # FlexibleRunner reads the wrapper from `strategy`, never from
    # model_wrapper_cfg (tests/test_engine/test_flexible_runner.py trains).
    cfg = enable_augsub(Config.fromfile(resolve_config(MAE_DS)),
                        dict(type='AugMask', ratio=0.5))
    assert cfg.runner_type == 'FlexibleRunner'
    prepare_augsub_config(cfg)
    assert cfg.strategy.type == 'AugSubDeepSpeedStrategy'
    assert cfg.strategy.zero_optimization.stage == 1  # the recipe's
    assert 'model_wrapper_cfg' not in cfg


def test_setup_cpu_dist_does_nothing_without_launcher():
    cfg = Config.fromfile(AUGMASK_CFG)
    cfg.launcher = 'none'
    before = cfg.to_dict()
    assert setup_cpu_dist(cfg) is False
    assert cfg.to_dict() == before
    assert not torch.distributed.is_initialized()


def test_close_dist_destroys_the_process_group(tmp_path):
    close_dist()  # no process group: nothing to do
    dist = torch.distributed
    dist.init_process_group('gloo', rank=0, world_size=1,
                            init_method=f'file://{tmp_path}/store')
    try:
        assert dist.is_initialized()
        close_dist()
        assert not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def test_resolve_config():
    assert resolve_config(PLAIN_CFG) == PLAIN_CFG
    path = resolve_config(DEIT3)
    assert osp.isfile(path) and path.endswith(DEIT3.split('::')[1])
    with pytest.raises(FileNotFoundError, match='ships no deit3/nope.py'):
        resolve_config('mmpretrain::deit3/nope.py')


# -- the tool -----------------------------------------------------------
def files_digest(folder):
    return {name: hashlib.sha256(open(osp.join(folder, name), 'rb').read())
            .hexdigest()
            for name in sorted(os.listdir(folder))
            if osp.isfile(osp.join(folder, name))}


@pytest.fixture(scope='module')
def first_run(tmp_path_factory, image_folder):
    """2 epochs of the AugMask toy config, validated and saved each epoch."""
    work_dir = str(tmp_path_factory.mktemp('first_run'))
    proc = run_train(AUGMASK_CFG, '--work-dir', work_dir,
                     *data_options(image_folder))
    assert proc.returncode == 0, proc.stdout
    return work_dir, proc.stdout


def test_train_saves_and_reports(first_run):
    work_dir, out = first_run
    assert {'epoch_1.pth', 'epoch_2.pth', 'last_checkpoint'} <= set(
        os.listdir(work_dir))
    assert 'loss_sub' in out
    lines = final_lines(out)
    assert lines['Checkpoint'] == [osp.join(work_dir, 'epoch_2.pth')]
    top1 = float(lines['Top-1'][0])
    assert 0 <= top1 <= 100
    # The value printed is the last validation's, as logged.
    logged = [line for line in out.splitlines() if 'accuracy/top1:' in line]
    assert len(logged) == 2  # one validation per epoch
    assert f'accuracy/top1: {top1:.4f}' in logged[-1]


def test_resume_from_a_checkpoint_path(first_run, image_folder, tmp_path):
    work_dir, _ = first_run
    proc = run_train(AUGMASK_CFG, '--work-dir', str(tmp_path), '--resume',
                     osp.join(work_dir, 'epoch_1.pth'), '--no-validate',
                     *data_options(image_folder, splits=('train', )))
    assert proc.returncode == 0, proc.stdout
    assert 'resumed epoch: 1, iter: 4' in proc.stdout
    assert 'Epoch(train) [1]' not in proc.stdout  # epoch 1 is not redone
    assert 'Epoch(train) [2][4/4]' in proc.stdout
    assert final_lines(proc.stdout)['Checkpoint'] == [
        str(tmp_path / 'epoch_2.pth')]
    assert not (tmp_path / 'epoch_1.pth').exists()


def test_auto_resume_picks_the_latest(first_run, image_folder, tmp_path):
    work_dir, _ = first_run
    copy = str(tmp_path / 'copy')
    shutil.copytree(work_dir, copy)
    proc = run_train(AUGMASK_CFG, '--work-dir', copy, '--resume',
                     '--no-validate',
                     *data_options(image_folder, splits=('train', ),
                                   **{'train_cfg.max_epochs': 3}))
    assert proc.returncode == 0, proc.stdout
    assert 'Auto resumed from the latest checkpoint' in proc.stdout
    assert 'resumed epoch: 2, iter: 8' in proc.stdout
    # No validation in this run: the epoch-1 top-1 that the resumed message
    # hub holds is not reported as this run's.
    assert final_lines(proc.stdout) == {
        'Checkpoint': [osp.join(copy, 'epoch_3.pth')], 'Top-1': ['n/a']}


def test_new_run_does_not_overwrite_an_earlier_one(first_run, image_folder):
    work_dir, _ = first_run
    before = files_digest(work_dir)
    proc = run_train(AUGMASK_CFG, '--work-dir', work_dir,
                     *data_options(image_folder))
    assert proc.returncode != 0
    assert 'already holds checkpoints' in proc.stdout
    assert '--resume' in proc.stdout
    assert files_digest(work_dir) == before


def test_augsub_flag_switches_a_plain_config_on(image_folder, tmp_path):
    proc = run_train(PLAIN_CFG, '--work-dir', str(tmp_path), '--augsub',
                     'AugMask:0.5', '--no-validate',
                     *data_options(image_folder, splits=('train', ),
                                   **{'train_cfg.max_epochs': 1}))
    assert proc.returncode == 0, proc.stdout
    assert 'loss_sub' in proc.stdout
    assert final_lines(proc.stdout) == {
        'Checkpoint': [str(tmp_path / 'epoch_1.pth')], 'Top-1': ['n/a']}
    saved = Config.fromfile(str(tmp_path / 'vit-tiny_toy.py'))
    assert saved.model.type == 'AugSubClassifier'
    assert saved.model.augsub == dict(type='AugMask', ratio=0.5)
    assert saved.model_wrapper_cfg.type == 'AugSubDistributedDataParallel'


def test_bad_augsub_spec_is_a_usage_error(tmp_path):
    proc = run_train(PLAIN_CFG, '--work-dir', str(tmp_path), '--augsub',
                     'AugMix:0.5')
    assert proc.returncode == 2
    assert "argument --augsub: Unknown sub-model 'AugMix'" in proc.stdout
    assert "('AugMask', 'AugDrop', 'AugPath')" in proc.stdout
    assert os.listdir(tmp_path) == []


@pytest.mark.skipif(torch.cuda.is_available(),
                    reason='checks the error on a machine without CUDA')
def test_amp_without_cuda_is_a_usage_error(tmp_path):
    proc = run_train(PLAIN_CFG, '--work-dir', str(tmp_path), '--amp')
    assert proc.returncode == 2
    assert 'AmpOptimWrapper needs a CUDA device' in proc.stdout


def test_auto_scale_lr_without_base_batch_size_is_explained(tmp_path):
    proc = run_train(PLAIN_CFG, '--work-dir', str(tmp_path),
                     '--auto-scale-lr')
    assert proc.returncode != 0
    assert 'add auto_scale_lr = dict(base_batch_size=...)' in proc.stdout
    assert os.listdir(tmp_path) == []
