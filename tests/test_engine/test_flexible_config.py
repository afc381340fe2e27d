"""FlexibleRunner configs with AugSub: prepare_augsub_config puts the AugSub
strategy and wrapper where FlexibleRunner reads them, keeps the recipe's
engine settings, and refuses what would skip the sub-model."""
import pytest
from mmengine.config import Config

import augsub_mm  # noqa: F401
from augsub_mm.config import augsub_strategy, prepare_augsub_config
from augsub_mm.engine.strategies import AugSubFSDPStrategy


def flexible_cfg(**extra) -> Config:
    return Config(dict(
        model=dict(type='AugSubClassifier'), runner_type='FlexibleRunner',
        model_wrapper_cfg=dict(type='AugSubDistributedDataParallel',
                               find_unused_parameters=True),
        optim_wrapper=dict(optimizer=dict(type='AdamW')), **extra))


@pytest.mark.parametrize('given,launcher,expected', [
    (None, 'none', 'AugSubSingleDeviceStrategy'),
    (None, 'pytorch', 'AugSubDDPStrategy'),
    ('SingleDeviceStrategy', 'none', 'AugSubSingleDeviceStrategy'),
    ('DDPStrategy', 'pytorch', 'AugSubDDPStrategy'),
    ('FSDPStrategy', 'pytorch', 'AugSubFSDPStrategy'),
    ('DeepSpeedStrategy', 'pytorch', 'AugSubDeepSpeedStrategy'),
    ('AugSubFSDPStrategy', 'slurm', 'AugSubFSDPStrategy'),
])
def test_strategy_becomes_ours(given, launcher, expected):
    strategy = None if given is None else dict(type=given)
    assert augsub_strategy(strategy, launcher)['type'] == expected


def test_engine_settings_kept_and_wrapper_set():
    fsdp = augsub_strategy(dict(
        type='FSDPStrategy', model_wrapper=dict(auto_wrap_policy='policy'),
        state_dict_cfg='full'), 'pytorch')
    assert fsdp == dict(
        type='AugSubFSDPStrategy', state_dict_cfg='full',
        model_wrapper=dict(type='AugSubFullyShardedDataParallel',
                           auto_wrap_policy='policy'))
    ds = augsub_strategy(dict(type='DeepSpeedStrategy', fp16=dict(
        enabled=True), zero_optimization=dict(stage=2)), 'pytorch')
    assert ds == dict(type='AugSubDeepSpeedStrategy',
                      fp16=dict(enabled=True), zero_optimization=dict(stage=2))


def test_four_config_lines_work_under_flexible_runner():
    """The README's switch-on lines set model_wrapper_cfg, which
    FlexibleRunner ignores: its DDP options move into the strategy."""
    cfg = prepare_augsub_config(flexible_cfg(launcher='pytorch'))
    assert 'model_wrapper_cfg' not in cfg
    assert cfg.strategy == dict(
        type='AugSubDDPStrategy',
        model_wrapper=dict(type='AugSubDistributedDataParallel',
                           find_unused_parameters=True))
    assert cfg.optim_wrapper.constructor == 'AugSubOptimWrapperConstructor'


def test_other_strategies_and_wrappers_refused():
    with pytest.raises(ValueError, match="AugSub cannot run in strategy "
                       "'ColossalAIStrategy'"):
        augsub_strategy(dict(type='ColossalAIStrategy'), 'pytorch')
    with pytest.raises(ValueError, match="needs model_wrapper type "
                       "'AugSubFullyShardedDataParallel', got "
                       "'MMFullyShardedDataParallel'"):
        augsub_strategy(dict(type='FSDPStrategy', model_wrapper=dict(
            type='MMFullyShardedDataParallel')), 'pytorch')


def test_fsdp_strategy_refuses_sharded_checkpoints():
    with pytest.raises(ValueError, match="state_dict_cfg='local'"):
        AugSubFSDPStrategy(state_dict_cfg='local')
    assert AugSubFSDPStrategy()._is_full_state_dict()


def test_train_tool_refuses_amp_flag_for_deepspeed(monkeypatch):
    import importlib.util
    import os.path as osp

    from conftest import REPO
    monkeypatch.syspath_prepend(osp.join(REPO, 'tools'))  # as a script
    spec = importlib.util.spec_from_file_location(
        'augsub_train_tool', osp.join(REPO, 'tools', 'train.py'))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    args = tool.parse_args(['cfg.py'])
    args.amp = True  # parse_args refuses --amp without CUDA
    cfg = flexible_cfg(strategy=dict(type='DeepSpeedStrategy'),
                       work_dir='unused')
    with pytest.raises(ValueError, match='DeepSpeed does not use'):
        tool.merge_args(cfg, args)
