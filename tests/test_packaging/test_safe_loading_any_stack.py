"""A checkpoint that pickles a command is refused by mmengine's own loader
(``load_from``, ``--resume`` and ``load_checkpoint`` all go through it) under
``import augsub_mm``, on the upstream stack and on the onedl fork, whose
loader would otherwise fall back to the unsafe ``weights_only=False``."""
import datetime
import os
import pickle
import subprocess
import sys

import pytest
import torch


class RunsCommand:
    """Pickles as a call of ``os.system``."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command, )


class Getattr:
    """Pickles as ``builtins.getattr(obj, name)``."""

    def __init__(self, obj, name):
        self.obj, self.name = obj, name

    def __reduce__(self):
        return getattr, (self.obj, self.name)


def load_with_mmengine(path, imports):
    code = (f'{imports}\n'
            'from mmengine.runner import CheckpointLoader\n'
            f'CheckpointLoader.load_checkpoint({path!r}, map_location="cpu")\n'
            'print("loaded")')
    return subprocess.run([sys.executable, '-c', code],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=120)


def is_fork():
    from mmengine.runner import checkpoint
    return hasattr(checkpoint, '_safe_torch_load')


def test_a_command_in_a_checkpoint_never_runs(tmp_path):
    marker = tmp_path / 'pwned'
    path = str(tmp_path / 'evil.pth')
    torch.save(dict(state_dict={}, meta=RunsCommand(f'touch {marker}')),
               path)
    refused = load_with_mmengine(path, 'import augsub_mm')
    assert refused.returncode != 0
    assert 'Weights only load failed' in refused.stdout
    assert not marker.exists()
    if is_fork():
        # What import augsub_mm prevents: the fork's fallback runs it.
        unsafe = load_with_mmengine(path, '')
        assert 'Falling back to weights_only=False' in unsafe.stdout
        assert marker.exists()


def test_the_getattr_escape_is_refused(tmp_path):
    from mmengine.logging import HistoryBuffer
    path = str(tmp_path / 'getattr.pth')
    escape = Getattr(Getattr(HistoryBuffer, '__init__'), '__globals__')
    torch.save(dict(state_dict={}, meta=escape), path)
    refused = load_with_mmengine(path, 'import augsub_mm')
    assert refused.returncode != 0
    assert 'Refusing getattr' in refused.stdout


def test_an_explicit_choice_of_the_caller_is_kept(tmp_path):
    """Only the automatic fallback is removed: a caller that asks for the
    unsafe loader (trusting the file) still gets it."""
    if not is_fork():
        pytest.skip('upstream mmengine has no fallback to keep or remove')
    import augsub_mm  # noqa: F401
    from mmengine.runner import checkpoint
    path = str(tmp_path / 'obj.pth')
    day = datetime.date(2026, 11, 30)  # not allow-listed
    torch.save(dict(x=day), path)
    with pytest.raises(pickle.UnpicklingError):
        checkpoint._safe_torch_load(path)
    assert checkpoint._safe_torch_load(path, weights_only=False)['x'] == day
