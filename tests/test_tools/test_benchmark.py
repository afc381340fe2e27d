"""tools/analysis_tools/benchmark_augsub.py: runs on a tiny config, prints a
table with a row per mode and sane ratios (no timing assertion: the machine
is shared), reports a broken mode as a failed row, and reads what it needs
from zoo configs."""
import importlib.util
import os.path as osp
import subprocess
import sys

import pytest

from conftest import REPO, TINY_CONFIGS

TOOL = osp.join(REPO, 'tools', 'analysis_tools', 'benchmark_augsub.py')


def load_tool():
    spec = importlib.util.spec_from_file_location('benchmark_augsub', TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def table_rows(stdout):
    rows = {}
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.strip().strip('|').split('|')]
        if line.startswith('| ') and cells[0] != 'mode':
            rows[cells[0]] = cells[1:]
    return rows


def test_benchmark_prints_every_mode_with_sane_ratios():
    result = subprocess.run(
        [sys.executable, TOOL, osp.join(TINY_CONFIGS, 'vit-tiny_toy.py'),
         '--sub', 'AugMask(ratio=0.5)', 'AugPath(ratio=2)',
         'AugPath(ratio=0.5, skip=False) two_pass',
         '--step-modes', 'two_pass', 'joint', '--batch-size', '4',
         '--repeats', '2', '--warmup', '1', '--device', 'cpu',
         '--threads', '1', '--overhead'],
        capture_output=True, text=True, timeout=600)
    # AugPath(ratio=2) cannot be built: its rows fail, the run goes on.
    assert result.returncode == 1, result.stderr[-3000:]
    out = result.stdout
    assert 'batch 4, input 32x32' in out
    assert 'peak RSS (VmHWM)' in out and 'MALLOC_MMAP_THRESHOLD_=' in out
    rows = table_rows(out)
    assert list(rows) == [
        'baseline', 'AugMask(ratio=0.5)', 'AugMask(ratio=0.5) joint',
        'AugPath(ratio=2)', 'AugPath(ratio=2) joint',
        'AugPath(ratio=0.5, skip=False)'
    ]
    assert rows['AugPath(ratio=2)'][0].startswith('failed: ValueError')
    assert 'AugPath ratio must be a number in (0, 1)' in out

    base = rows['baseline']
    assert base[1] == base[3] == base[5] == '1.00' and base[6] == '-'
    for label in ('AugMask(ratio=0.5)', 'AugMask(ratio=0.5) joint',
                  'AugPath(ratio=0.5, skip=False)'):
        (median, time_ratio, spread, min_ratio, memory, memory_ratio,
         overhead) = rows[label]
        low, high = map(float, spread.split(' - '))
        assert 0 < low <= float(median) <= high
        # A sub pass costs something, and not 20 baselines.
        assert 0.2 < float(time_ratio) < 20 and 0.2 < float(min_ratio) < 20
        assert float(memory) > 0 and 0.5 < float(memory_ratio) < 5
        assert overhead.endswith('%)')


def test_reads_input_size_and_builds_baseline_and_sub_models():
    tool = load_tool()
    cfg = tool.load_config('mmpretrain::deit3/deit3-small-p16_64xb64_in1k.py',
                           {'train_dataloader.batch_size': 3})
    assert tool.find_input_size(cfg) == (224, 224)
    assert cfg.train_dataloader.batch_size == 3

    cfg = tool.load_config(osp.join(TINY_CONFIGS, 'vit-tiny_augmask_toy.py'),
                           None)
    assert tool.find_input_size(cfg) == (32, 32)  # backbone.img_size
    baseline = tool.model_cfg(cfg, None, 'two_pass')
    assert baseline['type'] == 'ImageClassifier' and 'augsub' not in baseline
    sub = tool.model_cfg(cfg, ('AugPath', dict(ratio=0.3)), 'joint')
    assert sub['type'] == 'AugSubClassifier'
    assert sub['augsub'] == dict(type='AugPath', ratio=0.3)
    assert sub['step_mode'] == 'joint'
    assert sub['backbone'] == baseline['backbone']


def test_parse_sub():
    tool = load_tool()
    assert tool.parse_sub('AugPath(ratio=0.5, skip=False)') == (
        'AugPath', dict(ratio=0.5, skip=False))
    assert tool.parse_sub('AugMask') == ('AugMask', {})
    for bad in ('AugMask(0.5)', 'AugMask(ratio=x)', 'dict(', '1 + 2'):
        with pytest.raises(ValueError, match=r'Type\(arg=value'):
            tool.parse_sub(bad)


def test_timm_config_baseline_is_the_timm_classifier():
    tool = load_tool()
    cfg = tool.load_config(
        osp.join(TINY_CONFIGS, 'timm-vit-tiny_augmask_toy.py'), None)
    assert tool.find_input_size(cfg) == (32, 32)  # model.img_size
    assert tool.num_classes(cfg) == 4
    baseline = tool.model_cfg(cfg, None, 'two_pass')
    assert baseline['type'] == 'TimmClassifier' and 'augsub' not in baseline
    sub = tool.model_cfg(cfg, ('AugMask', dict(ratio=0.5)), 'two_pass')
    assert sub['type'] == 'AugSubClassifier'
    assert sub['model_name'] == baseline['model_name'] == \
        'vit_tiny_patch16_224'
