"""augsub_mm/checkpoint.py: mmengine checkpoints load with torch's safe
loader (``weights_only=True``, torch's default) once ``augsub_mm`` is
imported, and the allow-list lets nothing else through."""
import os
import os.path as osp
import pickle
import subprocess
import sys

import augsub_mm  # noqa: F401  registers the allow-list
import pytest
import torch
from conftest import REPO, data_root_options
from mmengine.config import Config
from mmengine.logging import HistoryBuffer
from mmengine.runner import Runner


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory, image_folder):
    """A real training checkpoint: the second of 2 epochs of the AugMask toy
    config, so that its message hub holds losses and the metrics of the
    first validation."""
    work_dir = tmp_path_factory.mktemp('ckpt_run')
    cfg = Config.fromfile(osp.join(REPO, 'tests', 'configs',
                                   'vit-tiny_augmask_toy.py'))
    cfg.merge_from_dict(data_root_options(image_folder))
    cfg.work_dir = str(work_dir)
    # A name of its own: Runners in one process share visualizer instances
    # by experiment name.
    cfg.experiment_name = f'checkpoint_test_{work_dir.name}'
    Runner.from_cfg(cfg).train()
    return str(work_dir / 'epoch_2.pth')


def load_in_fresh_python(path: str, imports: str = '') -> subprocess.\
        CompletedProcess:
    code = f'{imports}\nimport torch\ntorch.load({path!r})\nprint("loaded")'
    return subprocess.run([sys.executable, '-c', code], cwd=REPO,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=120)


def test_training_checkpoint_loads_with_the_safe_loader(checkpoint):
    ckpt = torch.load(checkpoint)  # weights_only=True is torch's default
    assert {'meta', 'state_dict', 'message_hub', 'optimizer'} <= set(ckpt)
    scalars = ckpt['message_hub']['log_scalars']
    assert isinstance(scalars['train/loss_sub'], HistoryBuffer)
    assert isinstance(scalars['val/accuracy/top1'], HistoryBuffer)
    assert scalars['train/loss'].mean() > 0


def test_safe_loader_refuses_it_without_the_allow_list(checkpoint):
    """The checkpoint above really needs the allow-list (run without
    augsub_mm), and a fresh ``import augsub_mm`` is all it takes."""
    refused = load_in_fresh_python(checkpoint)
    assert refused.returncode != 0
    assert 'Unsupported global' in refused.stdout
    assert 'HistoryBuffer' in refused.stdout
    loaded = load_in_fresh_python(checkpoint, 'import augsub_mm')
    assert loaded.returncode == 0, loaded.stdout
    assert loaded.stdout.strip().endswith('loaded')


class RunsCommand:
    """Pickles as a call of ``os.system``: the classic malicious file."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command, )


class Getattr:
    """Pickles as ``getattr(obj, name)`` through ``builtins.getattr``, the
    one builtin mmengine checkpoints need."""

    def __init__(self, obj, name):
        self.obj, self.name = obj, name

    def __reduce__(self):
        return getattr, (self.obj, self.name)


def test_malicious_checkpoint_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / 'pwned'
    path = str(tmp_path / 'evil.pth')
    torch.save(dict(state_dict={}, meta=RunsCommand(f'touch {marker}')),
               path)
    with pytest.raises(pickle.UnpicklingError,
                       match='(?s)Weights only load failed.*GLOBAL posix.'
                       'system'):
        torch.load(path)
    assert not marker.exists()
    # The payload is real: the unsafe loader runs it.
    unsafe = subprocess.run(
        [sys.executable, '-c',
         f'import torch; torch.load({path!r}, weights_only=False)'],
        timeout=120)
    assert unsafe.returncode == 0
    assert marker.exists()


def test_getattr_reaches_only_history_buffer_statistics(tmp_path):
    path = str(tmp_path / 'getattr.pth')
    torch.save(dict(mean=Getattr(HistoryBuffer, 'mean')), path)
    assert torch.load(path)['mean'] is HistoryBuffer.mean
    # __init__ leads on to __globals__ and from there to anything.
    init_globals = Getattr(Getattr(HistoryBuffer, '__init__'), '__globals__')
    for payload in (Getattr(HistoryBuffer, '__init__'), init_globals,
                    Getattr(HistoryBuffer, 'update'),
                    Getattr(HistoryBuffer, '__class__')):
        torch.save(dict(x=payload), path)
        with pytest.raises(RuntimeError, match=r"Refusing getattr\(<class "
                           r"'mmengine.logging.history_buffer.HistoryBuffer'"):
            torch.load(path)
