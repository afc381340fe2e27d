"""An AugSub-trained checkpoint is a plain classifier: it loads strictly into
the plain (model-zoo style) config's model, and tools/test.py evaluates it
with that config, in one process and distributed on the CPU."""
import json
import os.path as osp

import augsub_mm  # noqa: F401  checkpoint globals, AugSub registered
import pytest
import torch
from mmengine.config import Config
from mmengine.runner.checkpoint import load_checkpoint
from mmpretrain.registry import MODELS
from tool_runner import (AUGMASK_CFG, PLAIN_CFG, data_options, free_port,
                         run, run_test, run_train, tool_env)


@pytest.fixture(scope='module')
def augmask_checkpoint(tmp_path_factory, image_folder):
    work_dir = str(tmp_path_factory.mktemp('augmask_run'))
    proc = run_train(AUGMASK_CFG, '--work-dir', work_dir, '--no-validate',
                     *data_options(image_folder, splits=('train', ),
                                   **{'train_cfg.max_epochs': 1}))
    assert proc.returncode == 0, proc.stdout
    assert 'loss_sub' in proc.stdout
    return osp.join(work_dir, 'epoch_1.pth')


def plain_model():
    model = MODELS.build(Config.fromfile(PLAIN_CFG).model)
    assert type(model).__name__ == 'ImageClassifier'
    return model


def test_checkpoint_loads_strictly_into_the_plain_model(augmask_checkpoint):
    state_dict = torch.load(augmask_checkpoint)['state_dict']
    model = plain_model()
    assert set(state_dict) == set(model.state_dict())
    result = model.load_state_dict(state_dict, strict=True)
    assert result.missing_keys == [] and result.unexpected_keys == []
    # mmengine's loader too, as `load_from` and tools/test.py use it.
    model = plain_model()
    load_checkpoint(model, augmask_checkpoint, strict=True)
    for name, value in model.state_dict().items():
        assert torch.equal(value, state_dict[name]), name


@pytest.fixture(scope='module')
def test_output(augmask_checkpoint, image_folder, tmp_path_factory):
    out_dir = tmp_path_factory.mktemp('test_run')
    metrics = str(out_dir / 'metrics.json')
    proc = run_test(PLAIN_CFG, augmask_checkpoint, '--work-dir',
                    str(out_dir), '--out', metrics, '--out-item', 'metrics',
                    *data_options(image_folder, splits=('test', )))
    assert proc.returncode == 0, proc.stdout
    with open(metrics) as f:
        return proc.stdout, json.load(f)


def test_test_tool_evaluates_with_the_plain_config(test_output):
    out, metrics = test_output
    top1 = metrics['accuracy/top1']
    assert 0 <= top1 <= 100
    assert f'accuracy/top1: {top1:.4f}' in out
    # mmengine warns on any missing or unexpected key.
    assert 'do not match exactly' not in out
    assert 'missing keys' not in out and 'unexpected key' not in out


def test_dist_test_gives_the_same_accuracy(test_output, augmask_checkpoint,
                                           image_folder, tmp_path):
    _, metrics = test_output
    proc = run(['bash', 'tools/dist_test.sh', PLAIN_CFG, augmask_checkpoint,
                '2', '--work-dir', str(tmp_path),
                *data_options(image_folder, splits=('test', ))],
               env=dict(tool_env(), PORT=str(free_port())))
    assert proc.returncode == 0, proc.stdout
    assert f"accuracy/top1: {metrics['accuracy/top1']:.4f}" in proc.stdout


def test_out_item_needs_out(augmask_checkpoint):
    proc = run_test(PLAIN_CFG, augmask_checkpoint, '--out-item', 'metrics')
    assert proc.returncode == 2
    assert '--out-item needs --out' in proc.stdout
