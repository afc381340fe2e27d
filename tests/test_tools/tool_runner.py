"""Helpers for the tool tests: run tools/ as a user would, in a subprocess
with the venv's python, and point the tiny configs at a generated folder."""
import os
import os.path as osp
import socket
import subprocess
import sys
from typing import List, Optional

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
HERE = osp.dirname(osp.abspath(__file__))
CONFIGS = osp.join(REPO, 'tests', 'configs')
PLAIN_CFG = osp.join(CONFIGS, 'vit-tiny_toy.py')
AUGMASK_CFG = osp.join(CONFIGS, 'vit-tiny_augmask_toy.py')


def tool_env() -> dict:
    """The caller's environment, with the repo (augsub_mm) and this folder
    (the probe module) importable, and PYTHON for the shell scripts."""
    env = dict(os.environ)
    paths = [REPO, HERE] + [p for p in env.get('PYTHONPATH', '').split(':')
                            if p]
    env['PYTHONPATH'] = ':'.join(paths)
    env['PYTHON'] = sys.executable
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def data_options(root: str, splits=('train', 'val', 'test'),
                 **extra) -> List[str]:
    """``--cfg-options`` that point the tiny configs at ``root``."""
    options = [f'{split}_dataloader.dataset.data_root={root}'
               for split in splits]
    options += [f'{key}={value}' for key, value in extra.items()]
    return ['--cfg-options', *options]


def run(cmd: List[str], timeout: int = 180,
        env: Optional[dict] = None) -> subprocess.CompletedProcess:
    """Run ``cmd`` from the repo root; stdout and stderr both in
    ``.stdout``."""
    return subprocess.run(
        cmd, cwd=REPO, env=env or tool_env(), timeout=timeout,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def run_train(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return run([sys.executable, 'tools/train.py', *args], **kwargs)


def run_test(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return run([sys.executable, 'tools/test.py', *args], **kwargs)


def final_lines(out: str) -> dict:
    """The ``Checkpoint:`` and ``Top-1:`` lines tools/train.py ends with."""
    found = {}
    for line in out.splitlines():
        for key in ('Checkpoint', 'Top-1'):
            if line.startswith(f'{key}: '):
                found.setdefault(key, []).append(line[len(key) + 2:])
    return found
