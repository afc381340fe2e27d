"""tools/analysis_tools/gpu_check.py, the one command for a GPU day, on the
CPU: its dry run (every part that can run without CUDA, tiny sizes), its
time budget (a part that overruns is ended with the processes it started, a
part the budget cannot cover is skipped), its exit status, and the code of
its CUDA-only AMP part run on the CPU with the CPU GradScaler."""
import json
import os
import os.path as osp
import subprocess
import sys
import time

import pytest
import torch
from conftest import REPO

TOOL = osp.join(REPO, 'tools', 'analysis_tools', 'gpu_check.py')
sys.path.insert(0, osp.dirname(TOOL))
import gpu_check  # noqa: E402


def run_tool(*args, env=None, timeout=300):
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, TOOL, *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, **(env or {})))
    return proc, time.perf_counter() - start


def verdicts(stdout):
    """{part: (VERDICT, rest of the line)} of the verdict lines."""
    found = {}
    for line in stdout.splitlines():
        if line.startswith('gpu_check: ') and ':' in line[11:]:
            verdict, _, rest = line[11:].partition(' ')
            name, _, summary = rest.strip().partition(': ')
            found[name] = (verdict, summary)
    return found


def test_cpu_dry_run(tmp_path):
    """The command as docs/performance.md gives it for the CPU, with the
    parts CI can afford (the Runner's compiled run and the other models'
    costs take minutes here)."""
    out = tmp_path / 'out'
    proc, seconds = run_tool(
        '--device', 'cpu', '--tiny', '--out', str(out), '--budget', '240',
        '--parts', 'exactness-fp32', 'amp-fp16', 'bf16', 'runner-ddp',
        'cost:vit-s')
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    found = verdicts(proc.stdout)
    assert found['env'][0] == 'PASS'
    assert found['exactness-fp32'][0] == 'PASS'
    assert found['exactness-fp32'][1].startswith(
        f'{len(gpu_check.FP32_CASES)}/{len(gpu_check.FP32_CASES)} cases')
    assert found['amp-fp16'] == ('SKIP', 'skipped: needs CUDA')
    assert found['bf16'][0] == 'PASS'
    assert found['runner-ddp'][0] == 'PASS', found['runner-ddp']
    assert found['cost:vit-s'][0] == 'MEASURED'
    assert seconds < 240

    report = json.loads((out / 'gpu_check.json').read_text())
    assert report['verdict'] == 'pass' and report['device'] == 'cpu'
    assert report['env']['torch'] == torch.__version__
    parts = {p['name']: p for p in report['parts']}
    runner = parts['runner-ddp']
    assert all(c['passed'] for c in runner['checks'])
    assert runner['probe']['wrapper'] == 'AugSubDistributedDataParallel'
    assert runner['probe']['backend'] == 'gloo'
    assert runner['command'].startswith('bash tools/dist_train.sh ')
    cases = parts['exactness-fp32']['cases']
    assert all(c['passed'] and c['max_abs_diff'] < 1e-4 for c in cases)
    # Each case's control (a plain second pass) is far outside.
    assert all(c['control_max_abs_diff'] > 10 * c['max_abs_diff']
               for c in cases)
    base, augmask = report['cost']
    assert (base['mode'], augmask['mode']) == ('baseline',
                                               'AugMask(ratio=0.5)')
    assert base['time_ratio'] == 1.0 and augmask['time_ratio'] > 0
    assert augmask['peak_mib'] > 0 and augmask['images_per_s'] > 0
    assert base['input_size'] == [64, 64] and base['batch_size'] == 2

    table = (out / 'gpu_check.md').read_text()
    assert '| exactness-fp32 | pass |' in table
    assert '| amp-fp16 | skip | ' in table
    assert '| ViT-S/16 (DeiT-III) | 2 | 64x64 | AugMask(ratio=0.5) | no |' \
        in table
    assert 'benchmark_augsub.py mmpretrain::deit3/' in table


@pytest.mark.parametrize('isolation', ['fork', 'subprocess'])
def test_a_part_over_its_limit_is_ended_with_what_it_started(
        tmp_path, isolation):
    out = tmp_path / 'out'
    proc, seconds = run_tool(
        '--device', 'cpu', '--out', str(out), '--isolation', isolation,
        '--parts', '_sleep', '_fail', '--part-budget', '_sleep=2',
        timeout=60)
    found = verdicts(proc.stdout)
    assert found['_sleep'][0] == 'TIMEOUT', proc.stdout
    assert 'ended after 2 s' in found['_sleep'][1]
    # The run goes on after the timeout; a failed check fails the command.
    assert found['_fail'][0] == 'FAIL'
    assert 'a check that fails' in found['_fail'][1]
    assert proc.returncode == 1
    assert seconds < 30
    grandchild = int((out / '_sleep.pid').read_text())
    time.sleep(0.5)
    assert not osp.exists(f'/proc/{grandchild}') or \
        open(f'/proc/{grandchild}/stat').read().split()[2] == 'Z'
    report = json.loads((out / 'gpu_check.json').read_text())
    assert report['verdict'] == 'fail' and report['failed'] == ['_fail']
    assert report['incomplete'] == ['_sleep']


def test_a_part_the_budget_cannot_cover_is_skipped(tmp_path):
    proc, seconds = run_tool('--device', 'cpu', '--out', str(tmp_path),
                             '--parts', '_fail', '--budget', '5.5',
                             timeout=60)
    found = verdicts(proc.stdout)
    verdict, summary = found['_fail']
    assert verdict == 'SKIP' and 'the part needs at least 1 s' in summary
    assert proc.returncode == 0  # nothing failed; the report says skipped
    report = json.loads((tmp_path / 'gpu_check.json').read_text())
    assert report['verdict'] == 'incomplete'


def test_exactness_part_fails_when_the_reference_is_not_the_sub_model(
        monkeypatch):
    """With the reference's sub-model replaced by a plain second pass the
    part fails: it can tell them apart (and CI's pass means something)."""
    monkeypatch.setenv(gpu_check.BREAK_ENV, '1')
    result = gpu_check.part_exactness_fp32(
        dict(device='cpu'), cases=['vit-token-drop', 'resnet-input-masking'])
    assert result['verdict'] == 'fail'
    assert result['summary'].startswith('2/2 cases failed')


def test_amp_part_on_the_cpu_scaler():
    """The CUDA-only AMP part's code with torch's CPU GradScaler (in
    bfloat16: mmengine's CPU autocast takes no float16)."""
    device = torch.device('cpu')
    result = gpu_check.amp_fp16_results(
        device, gpu_check.emulated_amp_wrapper, 'bfloat16')
    assert result['verdict'] == 'pass', result['summary']
    cases = {c['id']: c for c in result['cases']}
    assert cases['one-loss-scale-both-passes']['calls'] == dict(
        scale=2, unscale_=1, step=1, update=1)
    skipped = cases['inf-in-sub-pass-skips-step']
    assert skipped['scale_after'] == skipped['scale_before'] / 2
    assert cases['scaler-state-in-state-dict']['saved_scale'] == 2.**11

    # A scaler that does not check for inf (disabled) steps on it: caught.
    def unchecked(model, dtype, init_scale=2.**12, clip=False):
        optim = gpu_check.emulated_amp_wrapper(model, dtype, init_scale,
                                               clip)
        optim.loss_scaler = torch.amp.GradScaler('cpu', enabled=False)
        return optim

    broken = {c['id']: c for c in gpu_check.amp_scaler_cases(
        device, unchecked, 'bfloat16')}
    assert not broken['inf-in-sub-pass-skips-step']['passed']
    assert 'stepped on an inf gradient' in \
        broken['inf-in-sub-pass-skips-step']['error']


def test_graphs_compiled_while_timed_are_counted():
    """A compiled mode whose graphs still grow in the timed iterations (the
    plain classifier: mmengine compiles its batch augmentations) is marked
    in the cost table, since its times include compiling."""
    import benchmark_augsub
    mode = dict(graphs=[6, 9, 10, 12, 12])  # after each round, warm-up first
    assert benchmark_augsub.graphs_while_timed(mode, 2) == 3
    assert benchmark_augsub.graphs_while_timed(mode, 0) == 12
    assert benchmark_augsub.graphs_while_timed(dict(graphs=[]), 2) == 0
    row = dict(compiled=True, graphs_while_timed=3)
    assert gpu_check._compiled_cell(row) == \
        'yes, 3 graphs compiled while timed'
    assert gpu_check._compiled_cell(dict(compiled=False)) == 'no'
