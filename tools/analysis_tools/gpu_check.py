"""One command that proves and measures AugSub on a CUDA device.

GPU time is rare and short, so everything that needs a GPU runs here, in one
prepared command, within a total time budget (8 minutes by default):

- ``env``: device, driver-side versions (torch, CUDA, cuDNN, NCCL), stack;
- ``exactness-fp32``: the core cases of the exactness matrix (ViT token drop,
  Swin mask token with gradient accumulation, ResNet input masking with and
  without gradient checkpointing, AugPath skipping work, AugPath replayed by
  checkpointing, AugDrop) on the device, in fp32 (TF32 off), against the
  hand references of the CPU tests (``augsub_reference.py``), each also
  against a plain second pass that the tolerance must tell apart;
- ``amp-fp16``: mmengine's ``AmpOptimWrapper`` in float16 with its
  GradScaler: the gradient at the optimizer step against the fp16 autocast
  reference, one loss scale for both backward passes (one unscale, step and
  update), an inf injected into the sub pass skipping the whole step
  (weights unchanged, scale backed off, the next step training), and the
  scaler's state in the wrapper's state dict (CUDA only);
- ``bf16``: the same gradient comparison under bfloat16 autocast;
- ``runner-ddp``: ``tools/dist_train.sh CONFIG 1`` (the Runner,
  ``AugSubDistributedDataParallel`` over NCCL, AMP and cudnn.benchmark on
  CUDA), a few iterations, and the checkpoint's GradScaler state;
- ``runner-compile``: the same with ``compile=True`` (Inductor);
- ``cost:MODEL`` and ``cost-compiled:MODEL``: ViT-S/16, ViT-B/16, Swin-T and
  ResNet-50 at 224 px and their recipes' per-GPU batch, AMP, eager and
  compiled, through ``benchmark_augsub.py``: time per iteration, images/s,
  ratio to the baseline of the same run, peak ``max_memory_allocated``.

Each part runs in a process of its own with a time limit (its budget, or
what is left of the total); a part that the remaining budget cannot cover is
skipped and reported, one that overruns is ended with everything it started.
Writes ``gpu_check.json`` and ``gpu_check.md`` into ``--out`` and prints a
verdict line per part; exits 1 when a check part (not a measurement) fails.

``--device cpu --tiny`` is the dry run of the same command (tiny sizes; the
AMP fp16 part is reported as skipped: it needs CUDA). Example::

    python tools/analysis_tools/gpu_check.py --out work_dirs/gpu_check
"""
import argparse
import datetime
import fnmatch
import json
import os
import os.path as osp
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import traceback
from typing import Callable, Dict, List, Optional

HERE = osp.dirname(osp.abspath(__file__))
REPO = osp.dirname(osp.dirname(HERE))
#: Seconds kept back from the total budget for writing the report.
RESERVE_S = 5
#: Set to make exactness-fp32 compare with a plain second pass instead of
#: the sub-model: it must then fail (how the tests see the exit status).
BREAK_ENV = 'AUGSUB_GPU_CHECK_BREAK'

# Cost table: name -> (config, label). Batch sizes are the recipes' per-GPU
# ones (64, 64, 64, 256) unless --batch-size is given.
MODELS = {
    'vit-s': ('mmpretrain::deit3/deit3-small-p16_64xb64_in1k.py',
              'ViT-S/16 (DeiT-III)'),
    'vit-b': ('mmpretrain::deit3/deit3-base-p16_64xb64_in1k.py',
              'ViT-B/16 (DeiT-III)'),
    'swin-t': ('mmpretrain::swin_transformer/swin-tiny_16xb64_in1k.py',
               'Swin-T'),
    'resnet-50': ('mmpretrain::resnet/resnet50_8xb256-rsb-a2-300e_in1k.py',
                  'ResNet-50 (RSB-A2)'),
}
#: The dry run's 64 px inputs are smaller than Swin-T's last 7 x 7 window.
TINY_OPTIONS = {'swin-t': ['model.backbone.pad_small_map=True']}
#: Extra untimed iterations of compiled modes (by --tiny): the compiles,
#: and the plain classifier's, whose whole train_step mmengine compiles,
#: recompiling its batch augmentations for several iterations.
COMPILED_WARMUP = {False: 5, True: 1}
#: Compiled rows in order of value per compile minute.
COMPILED_ORDER = ('vit-s', 'resnet-50', 'swin-t', 'vit-b')


# -- parts --------------------------------------------------------------------
class Part:
    """A step of the check. ``budget``: its time limit in seconds; ``needs``:
    the least time worth starting it with; ``kind``: 'check' (a failure
    fails the command) or 'measure'."""

    def __init__(self, name: str, fn: Callable, budget: float, needs: float,
                 kind: str = 'check', cuda_only: bool = False, **kwargs):
        self.name, self.fn, self.kwargs = name, fn, kwargs
        self.budget, self.needs = budget, needs
        self.kind, self.cuda_only = kind, cuda_only


def _device(ctx):
    import torch
    return torch.device('cuda', 0) if ctx['device'] == 'cuda' \
        else torch.device('cpu')


def part_env(ctx) -> dict:
    import mmcv
    import mmengine
    import mmpretrain
    import torch

    import augsub_mm
    info = dict(
        python=sys.version.split()[0], torch=torch.__version__,
        cuda=torch.version.cuda, mmengine=mmengine.__version__,
        mmcv=mmcv.__version__, mmpretrain=mmpretrain.__version__,
        augsub_mm=getattr(augsub_mm, '__version__', '?'),
        commit=_git_commit(), cpu=_cpu_name(), cores=os.cpu_count())
    if ctx['device'] == 'cuda':
        if not torch.cuda.is_available():
            raise RuntimeError('--device cuda, and torch sees no CUDA device '
                               f'(torch {torch.__version__}, built for CUDA '
                               f'{torch.version.cuda}).')
        props = torch.cuda.get_device_properties(0)
        x = torch.randn(256, 256, device='cuda')
        assert torch.isfinite(x @ x).all()
        info.update(
            device_name=props.name, capability='.'.join(
                map(str, torch.cuda.get_device_capability(0))),
            memory_gib=round(props.total_memory / 2**30, 1),
            cudnn=torch.backends.cudnn.version(),
            nccl='.'.join(map(str, torch.cuda.nccl.version())),
            driver=_nvidia_smi('driver_version'))
        try:
            import triton
            info['triton'] = triton.__version__
        except ImportError:
            info['triton'] = None
    else:
        info.update(device_name=f'CPU ({info["cpu"]}, {info["cores"]} '
                    'cores)')
    return dict(verdict='pass', summary=info['device_name'], info=info)


# Core cases of the exactness matrix. 'host': AugPath's skipped branches
# draw their kept samples on the CPU; 'tol': rtol, atol.
FP32_CASES = [
    dict(id='vit-token-drop', family='vit', kind='AugMask'),
    dict(id='vit-token-drop-joint', family='vit', kind='AugMask',
         step_mode='joint'),
    dict(id='swin-mask-token-accum2', family='swin', kind='AugMask',
         counts=2),
    dict(id='resnet-input-masking', family='resnet', kind='AugMask'),
    dict(id='resnet-input-masking-with-cp', family='resnet', kind='AugMask',
         with_cp=True),
    dict(id='vit-augpath-skip', family='vit', kind='AugPath',
         augsub_options=dict(skip=True), host=True, tol=(1e-4, 1e-5)),
    dict(id='swin-augpath-skip', family='swin', kind='AugPath',
         augsub_options=dict(skip=True), host=True, tol=(1e-4, 1e-5)),
    dict(id='resnet-augpath-with-cp', family='resnet', kind='AugPath',
         with_cp=True),
    dict(id='vit-augdrop', family='vit', kind='AugDrop'),
    dict(id='swin-augdrop-joint', family='swin', kind='AugDrop',
         step_mode='joint'),
]


def _strict_fp32(device) -> None:
    import torch
    if device.type == 'cuda':
        # TF32 would round both sides' convolutions and products to 10 bits
        # of mantissa; deterministic cuDNN keeps the two sides' kernels
        # alike. The comparison is then fp32's.
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


def _case_result(case_id: str, fn: Callable[[], dict]) -> dict:
    start = time.perf_counter()
    try:
        result = dict(id=case_id, passed=True, **fn())
    except Exception as error:  # a failed case does not stop the others
        result = dict(id=case_id, passed=False,
                      error=f'{type(error).__name__}: {error}'[:2000])
    result['seconds'] = round(time.perf_counter() - start, 2)
    return result


def part_exactness_fp32(ctx, cases: Optional[List[str]] = None) -> dict:
    import augsub_reference as ref
    device = _device(ctx)
    _strict_fp32(device)
    broken = bool(os.environ.get(BREAK_ENV))
    selected = [c for c in FP32_CASES
                if not (cases or ctx.get('cases')) or
                c['id'] in (cases or ctx.get('cases'))]

    def run(case):
        rtol, atol = case.get('tol', (1e-5, 1e-6))
        counts = case.get('counts', 1)
        got, plain_state, token, drawn = ref.augsub_grads(
            case['family'], case['kind'], case.get('with_cp', False),
            case.get('step_mode', 'two_pass'), counts, device=device,
            augsub_options=case.get('augsub_options'))
        expected = ref.reference_grads(
            case['family'], 'none' if broken else case['kind'], plain_state,
            token, [] if broken else drawn, counts, device=device,
            host_drawn_drop_path=case.get('host', False))
        diff = ref.max_abs_difference(got, expected)
        ref.assert_same_grads(got, expected, rtol=rtol, atol=atol)
        # The tolerance has power: a plain second pass is outside it.
        control = ref.reference_grads(case['family'], 'none', plain_state,
                                      token, [], counts, device=device)
        control_diff = ref.max_abs_difference(got, control)
        try:
            ref.assert_same_grads(got, control, rtol=rtol, atol=atol)
        except AssertionError:
            pass
        else:
            raise AssertionError('the gradient also equals that of a plain '
                                 'second pass: the comparison has no power')
        return dict(max_abs_diff=diff, control_max_abs_diff=control_diff,
                    masks=len(drawn))

    results = [_case_result(c['id'], lambda c=c: run(c)) for c in selected]
    return _cases_verdict(results, 'equal the hand reference',
                          'max_abs_diff', 'max |diff| {:.1e}')


def _cases_verdict(results, what, key=None, fmt='{}') -> dict:
    """Pass when every case passed; the summary names the worst ``key``."""
    failed = [r for r in results if not r['passed']]
    if failed:
        summary = (f'{len(failed)}/{len(results)} cases failed: ' +
                   '; '.join(f"{r['id']}: {r['error'][:200]}"
                             for r in failed))
        return dict(verdict='fail', summary=summary, cases=results)
    summary = f'{len(results)}/{len(results)} cases {what}'
    values = [r[key] for r in results if key in r]
    if values:
        summary += f' (worst: {fmt.format(max(values))})'
    return dict(verdict='pass', summary=summary, cases=results)


# -- AMP ----------------------------------------------------------------------
#: Relative error (norm of the difference over the norm, worst tensor) of
#: the gradient under reduced precision against the reference under the
#: same autocast: bfloat16 measured up to 3.7 % on the CPU (2026-12-03,
#: tests/test_engine/test_exactness.py); float16 keeps 3 more bits.
REDUCED_TOL = 0.06
AMP_FAMILIES = ('vit', 'swin', 'resnet')


def cuda_amp_wrapper(model, dtype='float16', init_scale=2.**12,
                     clip=False):
    """mmengine's AmpOptimWrapper on CUDA, SGD, as a config builds it."""
    import torch
    from mmengine.optim import AmpOptimWrapper
    return AmpOptimWrapper(
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        loss_scale=dict(init_scale=init_scale), dtype=dtype,
        clip_grad=dict(max_norm=5.0) if clip else None)


def emulated_amp_wrapper(model, dtype='float16', init_scale=2.**12,
                         clip=False):
    """The same wrapper on the CPU (tests only): mmengine's CUDA check
    patched, torch's CPU GradScaler in place of the CUDA one."""
    from unittest.mock import patch

    import torch
    from mmengine.optim import AmpOptimWrapper
    path = 'mmengine.optim.optimizer.amp_optimizer_wrapper.is_cuda_available'
    with patch(path, return_value=True):
        optim = AmpOptimWrapper(
            optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
            dtype=dtype, clip_grad=dict(max_norm=5.0) if clip else None)
    optim.loss_scaler = torch.amp.GradScaler('cpu', init_scale=init_scale)
    return optim


def reduced_precision_cases(device, dtype: str, make_wrapper) -> List[dict]:
    """The gradient at the optimizer step under ``dtype`` autocast against
    the reference under the same autocast, and a plain second pass outside
    the tolerance."""
    import torch

    import augsub_reference as ref
    cast = getattr(torch, dtype)

    def run(family):
        got, plain_state, token, drawn = ref.augsub_grads(
            family, 'AugMask', False, 'two_pass', 1, device=device,
            optim_wrapper_factory=lambda m: make_wrapper(m, dtype))
        expected = ref.reference_grads(family, 'AugMask', plain_state, token,
                                       drawn, 1, autocast=cast,
                                       device=device)
        error = ref.max_relative_error(got, expected)
        unmasked = ref.reference_grads(family, 'none', plain_state, token,
                                       [], 1, autocast=cast, device=device)
        control = ref.max_relative_error(got, unmasked)
        assert error < REDUCED_TOL, \
            f'relative error {error:.3f} >= {REDUCED_TOL}'
        assert control > 3 * REDUCED_TOL, \
            f'a plain second pass is within {control:.3f} only'
        return dict(relative_error=error, control_relative_error=control)

    return [_case_result(f'{family}-augmask-{dtype}', lambda f=family: run(f))
            for family in AMP_FAMILIES]


def amp_scaler_cases(device, make_wrapper,
                     dtype='float16') -> List[dict]:
    """One loss scale for both backward passes; an inf in the sub pass skips
    the whole step; the scaler's state in the wrapper's state dict."""
    import torch

    import augsub_reference as ref

    def model_and_wrapper(step_mode='two_pass', clip=False):
        model, _ = ref.build_augsub('vit', 'AugMask', step_mode=step_mode,
                                    device=device)
        optim = make_wrapper(model, dtype, clip=clip)
        optim.initialize_count_status(model, 0, 1)
        return model, optim

    def spy(obj, name, calls, record=lambda *a: None):
        fn = getattr(obj, name)

        def wrapper(*args, **kwargs):
            calls.append(record(*args))
            return fn(*args, **kwargs)
        setattr(obj, name, wrapper)

    def one_scale():
        model, optim = model_and_wrapper(clip=True)
        scaler = optim.loss_scaler
        calls = {k: [] for k in ('scale', 'unscale_', 'step', 'update')}
        spy(scaler, 'scale', calls['scale'],
            lambda loss: float(scaler.get_scale()))
        for name in ('unscale_', 'step', 'update'):
            spy(scaler, name, calls[name])
        ref.seed_all(0)
        model.train_step(ref.batch(0), optim)
        counts = {k: len(v) for k, v in calls.items()}
        assert counts == dict(scale=2, unscale_=1, step=1, update=1), counts
        assert len(set(calls['scale'])) == 1, \
            f"the passes were scaled by {calls['scale']}"
        return dict(scale=calls['scale'][0], calls=counts)

    def inf_in_sub_pass(step_mode):
        model, optim = model_and_wrapper(step_mode)
        scaler = optim.loss_scaler
        steps = []
        spy(optim.optimizer, 'step', steps)
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        scale = float(scaler.get_scale())
        # The sub loss module runs in the sub pass only.
        handle = model.sub_loss.register_forward_hook(
            lambda module, args, out: out * float('inf'))
        ref.seed_all(0)
        model.train_step(ref.batch(0), optim)
        handle.remove()
        assert steps == [], 'the optimizer stepped on an inf gradient'
        changed = [n for n, p in model.named_parameters()
                   if not torch.equal(p.detach(), before[n])]
        assert not changed, f'weights changed by a skipped step: {changed}'
        backed_off = float(scaler.get_scale())
        assert backed_off == scale * 0.5, (scale, backed_off)
        assert optim._inner_count == 1, 'the skipped iteration is counted'
        assert all(p.grad is None or not p.grad.any()
                   for p in model.parameters()), 'gradients left behind'
        ref.seed_all(1)
        model.train_step(ref.batch(1), optim)
        assert len(steps) == 1, 'the next iteration did not step'
        assert all(torch.isfinite(p).all() for p in model.parameters())
        assert any(not torch.equal(p.detach(), before[n])
                   for n, p in model.named_parameters())
        return dict(scale_before=scale, scale_after=backed_off)

    def scaler_state():
        model, optim = model_and_wrapper()
        handle = model.sub_loss.register_forward_hook(
            lambda module, args, out: out * float('inf'))
        ref.seed_all(0)
        model.train_step(ref.batch(0), optim)
        handle.remove()
        state = optim.state_dict()
        assert 'loss_scaler' in state, list(state)
        saved = float(state['loss_scaler']['scale'])
        assert saved == float(optim.loss_scaler.get_scale())
        fresh_model, fresh = model_and_wrapper()
        fresh.load_state_dict(state)
        restored = float(fresh.loss_scaler.get_scale())
        assert restored == saved, (saved, restored)
        return dict(saved_scale=saved)

    return [
        _case_result('one-loss-scale-both-passes', one_scale),
        _case_result('inf-in-sub-pass-skips-step',
                     lambda: inf_in_sub_pass('two_pass')),
        _case_result('inf-in-sub-pass-skips-step-joint',
                     lambda: inf_in_sub_pass('joint')),
        _case_result('scaler-state-in-state-dict', scaler_state),
    ]


def amp_fp16_results(device, make_wrapper, dtype='float16') -> dict:
    """``dtype``: the autocast type (the tests run this part's code on the
    CPU in bfloat16, the only one mmengine's CPU autocast takes)."""
    results = reduced_precision_cases(device, dtype, make_wrapper) + \
        amp_scaler_cases(device, make_wrapper, dtype)
    return _cases_verdict(results, 'passed', 'relative_error',
                          'relative error {:.3f}')


def part_amp_fp16(ctx) -> dict:
    return amp_fp16_results(_device(ctx), cuda_amp_wrapper)


def part_bf16(ctx) -> dict:
    device = _device(ctx)
    if device.type == 'cuda':
        make_wrapper = cuda_amp_wrapper
    else:
        import augsub_reference as ref

        def make_wrapper(model, dtype):
            return ref.cpu_amp_wrapper(model, dtype)
    results = reduced_precision_cases(device, 'bfloat16', make_wrapper)
    return _cases_verdict(results, 'within the tolerance', 'relative_error',
                          'relative error {:.3f}')


# -- the Runner through tools/dist_train.sh -----------------------------------
RUNNER_CONFIG = """\
# Written by gpu_check.py: a tiny ViT with the README's switch-on lines.
_base_ = 'mmpretrain::_base_/default_runtime.py'
custom_imports = dict(imports=['augsub_mm', 'gpu_check_probe'],
                      allow_failed_imports=False)
model = dict(
    type='AugSubClassifier',
    augsub=dict(type='AugMask', ratio=0.5),
    backbone=dict(type='VisionTransformer',
                  arch=dict(embed_dims=64, num_layers=2, num_heads=2,
                            feedforward_channels=128),
                  img_size=32, patch_size=4, drop_path_rate=0.1),
    neck=None,
    head=dict(type='VisionTransformerClsHead', num_classes=4,
              in_channels=64,
              loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1,
                        mode='original')),
    data_preprocessor=dict(num_classes=4, mean=[127.5] * 3,
                           std=[127.5] * 3, to_rgb=True),
    train_cfg=dict(augments=[dict(type='Mixup', alpha=0.8),
                             dict(type='CutMix', alpha=1.0)]))
model_wrapper_cfg = dict(type='AugSubDistributedDataParallel')
randomness = dict(seed=0, diff_rank_seed=True)
pipeline = [dict(type='LoadImageFromFile'),
            dict(type='RandomFlip', prob=0.5, direction='horizontal'),
            dict(type='PackInputs')]
train_dataloader = dict(
    batch_size=8, num_workers=0,
    dataset=dict(type='CustomDataset', data_root={data_root!r},
                 pipeline=pipeline),
    sampler=dict(type='DefaultSampler', shuffle=True))
optim_wrapper = dict(optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05),
                     clip_grad=dict(max_norm=5.0))
param_scheduler = []
train_cfg = dict(by_epoch=True, max_epochs={epochs})
default_hooks = dict(logger=dict(interval=1),
                     checkpoint=dict(type='CheckpointHook',
                                     interval={epochs}))
custom_hooks = [dict(type='GpuCheckProbeHook')]
env_cfg = dict(cudnn_benchmark={cudnn_benchmark},
               dist_cfg=dict(backend={backend!r}))
"""
RUNNER_IMAGES = 32  # 4 classes x 8: 4 iterations of 8 per epoch
RUNNER_EPOCHS = 2


def _image_folder(root: str) -> str:
    """4 class folders of 32 px PNGs, each class a bright square at its own
    place on noise (learnable, tiny)."""
    import numpy as np
    from PIL import Image
    rng = np.random.default_rng(0)
    for c in range(4):
        folder = osp.join(root, f'class_{c}')
        os.makedirs(folder, exist_ok=True)
        for i in range(RUNNER_IMAGES // 4):
            img = rng.integers(0, 80, (32, 32, 3), dtype=np.uint8)
            y, x = (c // 2) * 16, (c % 2) * 16
            img[y:y + 16, x:x + 16, c % 3] = 230
            Image.fromarray(img).save(osp.join(folder, f'{i}.png'))
    return root


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def part_runner(ctx, compile: bool = False) -> dict:
    import torch
    cuda = ctx['device'] == 'cuda'
    name = 'runner-compile' if compile else 'runner-ddp'
    root = osp.join(ctx['out'], name)
    work_dir = osp.join(root, 'work')
    # tools/train.py refuses a work dir holding an earlier run's checkpoints.
    shutil.rmtree(work_dir, ignore_errors=True)
    os.makedirs(work_dir)
    config = osp.join(root, 'config.py')
    with open(config, 'w') as f:
        f.write(RUNNER_CONFIG.format(
            data_root=_image_folder(osp.join(ctx['out'], 'data')),
            epochs=RUNNER_EPOCHS, cudnn_benchmark=cuda,
            backend='nccl' if cuda else 'gloo'))
    options = []
    if compile:
        backend = ctx['compile_backend']
        options.append('compile=True' if backend == 'inductor' else
                       f'compile.backend={backend}')
    cmd = ['bash', osp.join('tools', 'dist_train.sh'), config, '1',
           '--work-dir', work_dir] + (['--amp'] if cuda else []) + \
        (['--cfg-options', *options] if options else [])
    env = dict(os.environ, PYTHON=sys.executable, PORT=str(_free_port()),
               PYTHONPATH=os.pathsep.join(
                   [REPO, HERE] + [p for p in os.environ.get(
                       'PYTHONPATH', '').split(os.pathsep) if p]))
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
    seconds = time.perf_counter() - start
    with open(osp.join(root, 'train.log'), 'w') as f:
        f.write(proc.stdout)
    command = ' '.join(shlex.quote(c) for c in cmd)
    checks = []

    def check(what, ok, detail=''):
        checks.append(dict(check=what, passed=bool(ok), detail=str(detail)))

    check('dist_train.sh exits 0', proc.returncode == 0,
          '' if proc.returncode == 0 else
          '\n'.join(proc.stdout.splitlines()[-25:]))
    probe_path = osp.join(work_dir, 'gpu_check_probe.json')
    probe = None
    if osp.exists(probe_path):
        with open(probe_path) as f:
            probe = json.load(f)
    check('the probe hook reported', probe is not None)
    if probe is not None:
        its = probe['iterations']
        check('AugSubDistributedDataParallel around AugSubClassifier',
              probe['wrapper'] == 'AugSubDistributedDataParallel'
              and probe['model'] == 'AugSubClassifier',
              f"{probe['wrapper']}({probe['model']})")
        want = 'nccl' if cuda else 'gloo'
        check(f'process group: {want}, world size 1',
              probe['distributed'] and probe['backend'] == want
              and probe['world_size'] == 1,
              f"{probe['backend']}, {probe['world_size']}")
        want_device = 'cuda:0' if cuda else 'cpu'
        check(f'parameters on {want_device}',
              probe['param_devices'] == [want_device],
              probe['param_devices'])
        expected = RUNNER_EPOCHS * RUNNER_IMAGES // 8
        check(f'{expected} iterations, each logging loss and loss_sub',
              len(its) == expected and all(
                  'loss' in it and 'loss_sub' in it for it in its),
              f'{len(its)} iterations')
        check('finite losses', probe['finite'],
              [(it.get('loss'), it.get('loss_sub')) for it in its])
        if cuda:
            check('AmpOptimWrapper (--amp), cudnn.benchmark on',
                  probe['optim_wrapper'] == 'AmpOptimWrapper'
                  and probe['cudnn_benchmark'],
                  f"{probe['optim_wrapper']}, {probe['cudnn_benchmark']}")
        ckpt_path = osp.join(work_dir, f'epoch_{RUNNER_EPOCHS}.pth')
        ckpt = torch.load(ckpt_path, map_location='cpu',
                          weights_only=False) if osp.exists(ckpt_path) \
            else None
        check('checkpoint written', ckpt is not None, ckpt_path)
        if ckpt is not None and cuda:
            scaler = ckpt.get('optimizer', {}).get('loss_scaler', {})
            check("the GradScaler's state is in the checkpoint",
                  scaler.get('scale') == probe['loss_scale'],
                  f"saved {scaler.get('scale')}, "
                  f"live {probe['loss_scale']}")
        if compile:
            graphs = [it['graphs'] for it in its]
            check('train_step compiled, no graph compiled after iteration 2',
                  probe['compiled'] and graphs and graphs[0] > 0
                  and len(set(graphs[1:])) <= 1,
                  f'graphs after each iteration: {graphs}')
    failed = [c for c in checks if not c['passed']]
    summary = (f'{len(checks) - len(failed)}/{len(checks)} checks passed '
               f'({seconds:.0f} s training run)')
    if failed:
        summary += ': failed ' + '; '.join(
            f"{c['check']} ({c['detail'][-300:]})" for c in failed)
    return dict(verdict='fail' if failed else 'pass', summary=summary,
                checks=checks, command=command, probe=probe)


# -- the cost table -----------------------------------------------------------
def part_cost(ctx, model: str, compiled: bool = False) -> dict:
    import statistics

    import benchmark_augsub
    config, label = MODELS[model]
    cuda = ctx['device'] == 'cuda'
    argv = [config, '--sub', *ctx['sub'], '--device', ctx['device'],
            '--repeats', str(ctx['repeats']),
            '--warmup', str(ctx['warmup'] + (COMPILED_WARMUP[ctx['tiny']]
                                             if compiled else 0))]
    if cuda:
        argv.append('--amp')
    else:
        argv += ['--threads', '1']
    if ctx.get('batch_size'):
        argv += ['--batch-size', str(ctx['batch_size'])]
    if ctx.get('input_size'):
        argv += ['--input-size', str(ctx['input_size'])]
    if compiled:
        argv += ['--compile', ctx['compile_backend'], '--compile-only']
    if ctx.get('tiny') and model in TINY_OPTIONS:
        argv += ['--cfg-options', *TINY_OPTIONS[model]]
    args = benchmark_augsub.parse_args(argv)
    modes, settings = benchmark_augsub.run(args)
    rows, base = [], None
    for mode in modes:
        row = dict(model=model, label=label, config=config,
                   mode=mode['label'].replace(' compiled', ''),
                   compiled=bool(mode['compile']),
                   batch_size=settings['batch_size'],
                   input_size=list(settings['input_size']), amp=cuda,
                   error=mode['error'])
        if mode['error'] is None:
            median = statistics.median(mode['times'])
            row.update(time_s=median, min_s=min(mode['times']),
                       times_s=mode['times'],
                       images_per_s=settings['batch_size'] / median,
                       peak_mib=mode['peak_mib'])
            if compiled:
                row['graphs_while_timed'] = benchmark_augsub.\
                    graphs_while_timed(mode, settings['warmup'])
        if base is None:
            base = row
        if mode['error'] is None and base.get('time_s'):
            row.update(time_ratio=row['time_s'] / base['time_s'],
                       min_ratio=row['min_s'] / base['min_s'],
                       memory_ratio=row['peak_mib'] / base['peak_mib'])
        rows.append(row)
    failed = [r for r in rows if r['error']]
    table = benchmark_augsub.format_table(modes, settings)
    command = 'python tools/analysis_tools/benchmark_augsub.py ' + \
        ' '.join(shlex.quote(a) for a in argv)
    if failed:
        return dict(verdict='fail', rows=rows, table=table, command=command,
                    summary='; '.join(
                        f"{r['mode']}: {r['error'].strip().splitlines()[-1]}"
                        for r in failed))
    summary = ', '.join(
        f"{r['mode']} {r['time_s'] * 1e3:.1f} ms ({r['time_ratio']:.2f}x time"
        f", {r['memory_ratio']:.2f}x memory)" for r in rows[1:])
    return dict(verdict='measured', rows=rows, table=table, command=command,
                summary=f"{label}, batch {rows[0]['batch_size']}: "
                f"baseline {rows[0]['time_s'] * 1e3:.1f} ms; {summary}")


# -- self-tests of the scheduler (stdlib only) --------------------------------
def part_sleep(ctx) -> dict:
    """Starts a grandchild and sleeps: a part that overruns (tests)."""
    child = subprocess.Popen([sys.executable, '-c',
                              'import time; time.sleep(600)'])
    with open(osp.join(ctx['out'], '_sleep.pid'), 'w') as f:
        f.write(str(child.pid))
    time.sleep(float(os.environ.get('AUGSUB_GPU_CHECK_SLEEP', 600)))
    child.kill()
    return dict(verdict='pass', summary='slept')


def part_fail(ctx) -> dict:
    raise AssertionError('a check that fails (tests)')


def all_parts(ctx) -> List[Part]:
    parts = [
        Part('env', part_env, 60, 10),
        Part('exactness-fp32', part_exactness_fp32, 150, 30),
        Part('amp-fp16', part_amp_fp16, 90, 20, cuda_only=True),
        Part('bf16', part_bf16, 90, 20),
        Part('runner-ddp', part_runner, 120, 40),
    ]
    models = ctx['models']
    parts += [Part(f'cost:{m}', part_cost, 120, 40, kind='measure', model=m)
              for m in models]
    parts.append(Part('runner-compile', part_runner, 240, 60, compile=True))
    parts += [Part(f'cost-compiled:{m}', part_cost, 240, 90, kind='measure',
                   model=m, compiled=True)
              for m in COMPILED_ORDER if m in models]
    parts += [Part('_sleep', part_sleep, 60, 1),
              Part('_fail', part_fail, 10, 1)]
    for part in parts:
        if part.name in ctx['part_budget']:
            part.budget = ctx['part_budget'][part.name]
    return parts


def select(parts: List[Part], patterns: Optional[List[str]]) -> List[Part]:
    if not patterns:
        return [p for p in parts if not p.name.startswith('_')]
    chosen = [p for p in parts
              if any(fnmatch.fnmatchcase(p.name, pat) for pat in patterns)]
    unknown = [pat for pat in patterns
               if not any(fnmatch.fnmatchcase(p.name, pat) for p in parts)]
    if unknown:
        raise SystemExit(f'Unknown parts {unknown}; parts: '
                         f'{[p.name for p in parts]}')
    return chosen


# -- running a part in a process of its own -----------------------------------
def child_main(name: str, ctx: dict) -> None:
    """In the part's process: run it, write its result file."""
    part = next(p for p in all_parts(ctx) if p.name == name)
    start = time.perf_counter()
    try:
        result = part.fn(ctx, **part.kwargs)
    except Exception:
        trace = traceback.format_exc()
        print(trace, flush=True)
        result = dict(verdict='fail', summary=trace.strip().splitlines()[-1],
                      traceback=trace)
    result['seconds'] = round(time.perf_counter() - start, 1)
    path = _result_path(ctx, name)
    with open(path + '.tmp', 'w') as f:
        json.dump(result, f, indent=1, default=str)
    os.replace(path + '.tmp', path)


def _result_path(ctx, name):
    return osp.join(ctx['out'], 'parts', name.replace(':', '_') + '.json')


def _log_path(ctx, name):
    return osp.join(ctx['out'], 'parts', name.replace(':', '_') + '.log')


def launch(part: Part, ctx: dict, timeout: float) -> dict:
    """Run ``part`` in a new process session; end the whole session when
    it outlives ``timeout``. Returns its result dict."""
    log = open(_log_path(ctx, part.name), 'w')
    start = time.perf_counter()
    if ctx['isolation'] == 'fork':
        # Modules imported by the parent are shared; the parent never
        # touched CUDA (fork mode is for the CPU).
        pid = os.fork()
        if pid == 0:  # the part's process
            code = 1
            try:
                os.setsid()
                os.dup2(log.fileno(), 1)
                os.dup2(log.fileno(), 2)
                child_main(part.name, ctx)
                code = 0
            finally:
                sys.stdout.flush()
                os._exit(code)
        proc = None
    else:
        ctx_path = osp.join(ctx['out'], 'parts', 'ctx.json')
        with open(ctx_path, 'w') as f:
            json.dump(ctx, f)
        proc = subprocess.Popen(
            [sys.executable, osp.abspath(__file__), '--child', part.name,
             '--ctx', ctx_path], stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, cwd=REPO)
        pid = proc.pid
    status, timed_out = None, False
    while status is None:
        if proc is not None:
            status = proc.poll()
        else:
            done, raw = os.waitpid(pid, os.WNOHANG)
            status = None if done == 0 else raw
        if status is None:
            if time.perf_counter() - start > timeout:
                timed_out = True
                _end_session(pid, proc)
                break
            time.sleep(0.1)
    log.close()
    seconds = round(time.perf_counter() - start, 1)
    if timed_out:
        return dict(verdict='timeout', seconds=seconds,
                    summary=f'ended after {timeout:.0f} s (its limit), '
                    'with every process it started')
    path = _result_path(ctx, part.name)
    if not osp.exists(path):
        return dict(verdict='fail', seconds=seconds,
                    summary=f'its process died (status {status}) without a '
                    f'result; see {_log_path(ctx, part.name)}')
    with open(path) as f:
        result = json.load(f)
    result['wall_s'] = seconds
    return result


def _end_session(pid: int, proc) -> None:
    """SIGTERM to the part's session, SIGKILL to whatever is left of it
    5 s later; the part's own process is reaped."""
    reaped = []

    def leader_done():
        if proc is not None:
            return proc.poll() is not None
        if not reaped and os.waitpid(pid, os.WNOHANG)[0] != 0:
            reaped.append(pid)
        return bool(reaped)

    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            pass
        deadline = time.perf_counter() + 5
        while not leader_done() and time.perf_counter() < deadline:
            time.sleep(0.1)


def run_parts(parts: List[Part], ctx: dict, budget: float,
              started: float) -> List[dict]:
    results = []
    env_failed = False
    for part in parts:
        result = dict(name=part.name, kind=part.kind)
        remaining = budget - (time.perf_counter() - started) - RESERVE_S
        if env_failed:
            result.update(verdict='skip', summary='skipped: env failed')
        elif part.cuda_only and ctx['device'] != 'cuda':
            result.update(verdict='skip', summary='skipped: needs CUDA')
        elif remaining < part.needs:
            result.update(
                verdict='skip',
                summary=f'skipped: {max(remaining, 0):.0f} s of the total '
                f'budget left, the part needs at least {part.needs:.0f} s')
        else:
            timeout = min(part.budget, remaining)
            result['timeout_s'] = round(timeout, 1)
            result.update(launch(part, ctx, timeout))
            if part.name == 'env' and result['verdict'] != 'pass':
                env_failed = True
        print(verdict_line(result), flush=True)
        results.append(result)
    return results


# -- report -------------------------------------------------------------------
def verdict_line(result: dict) -> str:
    seconds = result.get('wall_s', result.get('seconds'))
    took = f' [{seconds:.1f} s]' if seconds is not None else ''
    return (f"gpu_check: {result['verdict'].upper():8s} {result['name']}: "
            f"{result.get('summary', '')}{took}")


def cost_rows(results: List[dict]) -> List[dict]:
    return [row for r in results for row in r.get('rows', [])]


def format_markdown(report: dict) -> str:
    env = report.get('env') or {}
    lines = [
        f"# AugSub GPU check, {report['date']}",
        '',
        f"- device: {env.get('device_name', report['device'])}"
        + (f", {env.get('memory_gib')} GiB, compute capability "
           f"{env.get('capability')}, driver {env.get('driver')}"
           if report['device'] == 'cuda' else ''),
        f"- torch {env.get('torch')}, CUDA {env.get('cuda')}, cuDNN "
        f"{env.get('cudnn')}, NCCL {env.get('nccl')}, Triton "
        f"{env.get('triton')}; mmengine {env.get('mmengine')}, mmcv "
        f"{env.get('mmcv')}, mmpretrain {env.get('mmpretrain')}, augsub_mm "
        f"{env.get('augsub_mm')} ({env.get('commit')})",
        f"- command: `{report['command']}`",
        f"- {report['elapsed_s']:.0f} s of a {report['budget_s']:.0f} s "
        f"budget; verdict: {report['verdict']}",
        '',
        '| part | verdict | s | summary |',
        '|---|---|---|---|',
    ]
    for r in report['parts']:
        seconds = r.get('wall_s', r.get('seconds'))
        summary = str(r.get('summary', '')).replace('|', '\\|')
        lines.append(f"| {r['name']} | {r['verdict']} | "
                     f"{'' if seconds is None else f'{seconds:.0f}'} | "
                     f'{summary} |')
    cases = [(r['name'], c) for r in report['parts']
             for c in r.get('cases', [])]
    if cases:
        lines += ['', '| part | case | result | s | detail |',
                  '|---|---|---|---|---|']
        for name, c in cases:
            detail = c.get('error') or ', '.join(
                f'{k} {v:.2e}' if isinstance(v, float) else f'{k} {v}'
                for k, v in c.items()
                if k not in ('id', 'passed', 'seconds'))
            detail = str(detail).replace('|', '\\|').replace('\n', ' ')
            lines.append(f"| {name} | {c['id']} | "
                         f"{'pass' if c['passed'] else 'FAIL'} | "
                         f"{c['seconds']:.1f} | {detail[:300]} |")
    rows = cost_rows(report['parts'])
    if rows:
        lines += [
            '', 'Cost: one training iteration (`train_step`: data '
            'preprocessing, both passes, optimizer step), synthetic data, '
            'median of the timed iterations, ratios to the baseline of the '
            'same run (the compiled baseline for compiled rows); peak memory '
            + ('`torch.cuda.max_memory_allocated`' if report['device'] ==
               'cuda' else 'peak RSS over the imports (CPU)') + '.',
            '',
            '| model | batch | input | mode | compiled | time / iter (ms) '
            '| images/s | x baseline | fastest (ms) | x baseline | '
            'peak memory (MiB) | x baseline |',
            '|---|---|---|---|---|---|---|---|---|---|---|---|']
        for row in rows:
            if row['error']:
                cells = ['failed: ' + row['error'].strip().splitlines()[-1]]
            else:
                cells = [f"{row['time_s'] * 1e3:.1f}",
                         f"{row['images_per_s']:.0f}",
                         f"{row.get('time_ratio', float('nan')):.2f}",
                         f"{row['min_s'] * 1e3:.1f}",
                         f"{row.get('min_ratio', float('nan')):.2f}",
                         f"{row['peak_mib']:.0f}",
                         f"{row.get('memory_ratio', float('nan')):.2f}"]
            size = 'x'.join(map(str, row['input_size']))
            lines.append(
                f"| {row['label']} | {row['batch_size']} | {size} | "
                f"{row['mode']}{' (AMP)' if row['amp'] else ''} | "
                f"{_compiled_cell(row)} | "
                + ' | '.join(cells) + ' |')
    commands = [(r['name'], r['command']) for r in report['parts']
                if r.get('command')]
    if commands:
        lines += ['', 'Commands the parts ran:', '']
        lines += [f'- {name}: `{cmd}`' for name, cmd in commands]
    return '\n'.join(lines) + '\n'


def _compiled_cell(row: dict) -> str:
    if not row['compiled']:
        return 'no'
    graphs = row.get('graphs_while_timed')
    # mmengine compiles a plain classifier's whole train_step, whose batch
    # augmentations' Python numbers recompile graphs for many iterations.
    return f'yes, {graphs} graphs compiled while timed' if graphs else 'yes'


def _git_commit() -> str:
    try:
        commit = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'],
                                cwd=REPO, capture_output=True, text=True,
                                timeout=10).stdout.strip()
        dirty = subprocess.run(['git', 'status', '--porcelain',
                                '--untracked-files=no'], cwd=REPO,
                               capture_output=True, text=True,
                               timeout=10).stdout.strip()
        return (commit or 'unknown') + (' + local changes' if dirty else '')
    except (OSError, subprocess.SubprocessError):
        return 'unknown'


def _cpu_name() -> str:
    try:
        with open('/proc/cpuinfo') as f:
            return next(line.split(':', 1)[1].strip() for line in f
                        if line.startswith('model name'))
    except (OSError, StopIteration):
        import platform
        return platform.processor() or platform.machine()


def _nvidia_smi(field: str) -> Optional[str]:
    try:
        return subprocess.run(
            ['nvidia-smi', f'--query-gpu={field}', '--format=csv,noheader'],
            capture_output=True, text=True, timeout=20).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


# -- command line -------------------------------------------------------------
def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Prove and measure AugSub on one CUDA device, within a '
        'time budget (docs/performance.md#gpu-check).')
    parser.add_argument('--device', choices=('cuda', 'cpu'), default='cuda',
                        help='cpu: the dry run (with --tiny)')
    parser.add_argument('--out', help='output folder (default: '
                        'work_dirs/gpu_check/<date>_<time>)')
    parser.add_argument('--budget', type=float, default=480,
                        help='total seconds, compiles included (default '
                        '480: 8 minutes)')
    parser.add_argument('--part-budget', nargs='+', default=[],
                        metavar='PART=SECONDS',
                        help='time limit of single parts')
    parser.add_argument('--parts', nargs='+', metavar='PART',
                        help='parts to run (shell patterns, e.g. cost:*); '
                        'default: all, in their order')
    parser.add_argument('--cases', nargs='+',
                        help='exactness-fp32 cases to run (default: all)')
    parser.add_argument('--models', nargs='+', choices=list(MODELS),
                        default=list(MODELS), help='cost table models')
    parser.add_argument('--sub', nargs='+', default=['AugMask(ratio=0.5)'],
                        help='sub-models of the cost table')
    parser.add_argument('--batch-size', type=int,
                        help="cost table batch (default: the recipes')")
    parser.add_argument('--repeats', type=int, help='timed iterations per '
                        'cost mode (default 10; 2 with --tiny)')
    parser.add_argument('--warmup', type=int, help='untimed iterations per '
                        'cost mode, 5 more when compiled (default 3; 1, and '
                        '1 more, with --tiny)')
    parser.add_argument('--compile-backend', default='inductor',
                        help='torch.compile backend of the compiled parts')
    parser.add_argument('--tiny', action='store_true',
                        help='tiny cost table sizes (batch 2, 64 px, 2 '
                        'repeats): the dry run')
    parser.add_argument('--isolation', choices=('fork', 'subprocess'),
                        help='how parts get their process: fork (shares '
                        'the imports; default on the CPU) or a new '
                        'interpreter (default on CUDA, which must not be '
                        'initialised before a fork)')
    parser.add_argument('--child', help=argparse.SUPPRESS)
    parser.add_argument('--ctx', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    budgets = {}
    for item in args.part_budget:
        name, _, seconds = item.partition('=')
        try:
            budgets[name] = float(seconds)
        except ValueError:
            parser.error(f'--part-budget takes PART=SECONDS, got {item!r}')
    args.part_budget = budgets
    if args.isolation == 'fork' and args.device == 'cuda':
        parser.error('--isolation fork is for the CPU: a CUDA process must '
                     'not be forked from one that may have initialised CUDA')
    return args


def main(argv=None) -> int:
    started = time.perf_counter()
    raw_argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(raw_argv)
    if args.child:
        with open(args.ctx) as f:
            ctx = json.load(f)
        child_main(args.child, ctx)
        return 0
    now = datetime.datetime.now()
    out = osp.abspath(args.out or osp.join(
        REPO, 'work_dirs', 'gpu_check', now.strftime('%Y%m%d_%H%M%S')))
    os.makedirs(osp.join(out, 'parts'), exist_ok=True)
    ctx = dict(
        device=args.device, out=out, tiny=args.tiny, models=args.models,
        sub=args.sub, cases=args.cases, compile_backend=args.compile_backend,
        batch_size=args.batch_size or (2 if args.tiny else None),
        input_size=64 if args.tiny else None,
        repeats=args.repeats or (2 if args.tiny else 10),
        warmup=args.warmup if args.warmup is not None else
        (1 if args.tiny else 3),
        isolation=args.isolation or (
            'fork' if args.device == 'cpu' else 'subprocess'),
        part_budget=args.part_budget)
    parts = select(all_parts(ctx), args.parts)
    if parts and not parts[0].name.startswith('_') and \
            parts[0].name != 'env':
        # Every report says what it ran on.
        parts.insert(0, next(p for p in all_parts(ctx) if p.name == 'env'))
    command = 'python tools/analysis_tools/gpu_check.py ' + ' '.join(
        shlex.quote(a) for a in raw_argv)
    print(f'gpu_check: {len(parts)} parts, {args.budget:.0f} s budget, '
          f'device {args.device}, output {out}', flush=True)
    if ctx['isolation'] == 'fork' and any(
            not p.name.startswith('_') for p in parts):
        # Imported once here, shared by every forked part.
        import torch  # noqa: F401

        import augsub_mm  # noqa: F401
        import augsub_reference  # noqa: F401
        import benchmark_augsub  # noqa: F401
    results = run_parts(parts, ctx, args.budget, started)
    checks = [r for r in results if r['kind'] == 'check']
    failed = [r['name'] for r in checks if r['verdict'] == 'fail']
    incomplete = [r['name'] for r in results
                  if r['verdict'] in ('timeout', 'skip')
                  and r.get('summary') != 'skipped: needs CUDA']
    verdict = 'fail' if failed else ('incomplete' if incomplete else 'pass')
    env = next((r.get('info') for r in results if r['name'] == 'env'), None)
    report = dict(
        date=now.strftime('%Y-%m-%d %H:%M'), command=command,
        device=args.device, env=env, budget_s=args.budget,
        elapsed_s=round(time.perf_counter() - started, 1),
        verdict=verdict, failed=failed, incomplete=incomplete,
        parts=results, cost=cost_rows(results))
    with open(osp.join(out, 'gpu_check.json'), 'w') as f:
        json.dump(report, f, indent=1, default=str)
    with open(osp.join(out, 'gpu_check.md'), 'w') as f:
        f.write(format_markdown(report))
    print(f'gpu_check: {verdict.upper()} in {report["elapsed_s"]:.0f} s'
          + (f'; failed: {", ".join(failed)}' if failed else '')
          + (f'; skipped or ended: {", ".join(incomplete)}'
             if incomplete else '')
          + f'\ngpu_check: {osp.join(out, "gpu_check.md")}', flush=True)
    return 1 if failed else 0


if __name__ == '__main__':
    # The references and the benchmark beside this file; augsub_mm from the
    # checkout when it is not installed (a GPU machine with the stack only).
    sys.path[:0] = [HERE] + ([] if REPO in sys.path else [REPO])
    raise SystemExit(main())
