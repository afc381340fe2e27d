"""What the sub-model costs: one training iteration with and without AugSub.

For a config, measures one training iteration -- data preprocessing
(Mixup/CutMix included), forward, backward, optimizer step, i.e. the model's
``train_step`` as the Runner calls it -- of the baseline (the config's model
as a plain ``ImageClassifier``, or ``TimmClassifier`` for a timm model) and
of each requested sub-model of `Augmenting Sub-model to Improve Main Model
<https://arxiv.org/abs/2306.11339>`_, on synthetic data of the config's
input size. Every mode runs in a fresh process of its own, so that its peak
memory is its own; the parent runs one iteration in each process in turn
(interleaved, so that a noisy machine slows every mode alike) and prints the
median time per iteration and the peak memory, with their ratio to the
baseline, as a Markdown table; on a shared machine, where other work only
ever adds time, the ratio of the fastest iterations is printed too.

Peak memory: on CUDA, ``torch.cuda.max_memory_allocated`` of the process
(weights, gradients, optimizer state, activations); on the CPU, the peak
resident set size of the process (``VmHWM``) minus its resident size after
the imports, before the model is built, with glibc's mmap threshold fixed
(``MALLOC_MMAP_THRESHOLD_``, 64 KiB unless set) so that memory freed by one
pass goes back to the OS instead of staying in the heap.

With ``--compile [BACKEND]``, every mode is also measured with its
``train_step`` compiled the way mmengine's Runner does for ``compile`` in a
config (``torch.compile(model.train_step, backend=BACKEND)``; Inductor by
default), next to the eager modes, and the ratio of each compiled mode to
its eager one is printed below the table. Compilation happens in the
warm-up iterations (raise ``--warmup`` if a backend needs more).

Example::

    python tools/analysis_tools/benchmark_augsub.py \\
        mmpretrain::deit3/deit3-small-p16_64xb64_in1k.py --batch-size 8 \\
        --sub 'AugMask(ratio=0.5)' 'AugMask(ratio=0.5) joint' \\
        'AugPath(ratio=0.5)' 'AugPath(ratio=0.5, skip=False)'
"""
import argparse
import ast
import cProfile
import multiprocessing as mp
import os
import os.path as osp
import platform
import pstats
import statistics
import time
import traceback
from typing import List, Optional, Tuple

STEP_MODES = ('two_pass', 'joint')
CPU_MMAP_BYTES = 64 * 1024


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(
        description='Time and peak memory of one training iteration with '
        'AugSub sub-models, relative to the baseline.')
    parser.add_argument('config', help='config file, or mmpretrain::PATH')
    parser.add_argument(
        '--sub', nargs='+', default=['AugMask(ratio=0.5)'],
        help="sub-models, each as Type(arg=value, ...), e.g. "
        "'AugMask(ratio=0.5)' 'AugPath(ratio=0.5, skip=False)'; a trailing "
        "step mode ('AugMask(ratio=0.5) joint') measures that one only")
    parser.add_argument(
        '--step-modes', nargs='+', default=['two_pass'], choices=STEP_MODES,
        help='AugSubClassifier step modes to measure for each sub-model '
        'without a step mode of its own')
    parser.add_argument('--batch-size', type=int,
                        help="defaults to the config's train batch size")
    parser.add_argument(
        '--input-size', type=int, nargs='+',
        help="H [W]; defaults to the train pipeline's crop size, or the "
        "backbone's img_size")
    parser.add_argument('--repeats', type=int, default=5,
                        help='timed iterations per mode')
    parser.add_argument('--warmup', type=int, default=2,
                        help='untimed iterations per mode first')
    parser.add_argument('--device', choices=('cpu', 'cuda'),
                        help='defaults to cuda when available')
    parser.add_argument('--amp', action='store_true',
                        help='AmpOptimWrapper (mixed precision; CUDA only)')
    parser.add_argument('--threads', type=int,
                        help='torch threads per process on the CPU')
    parser.add_argument(
        '--overhead', action='store_true',
        help="also measure the Python time of augsub_mm's own code per "
        'iteration (cProfile; an upper bound)')
    parser.add_argument(
        '--compile', nargs='?', const='inductor', metavar='BACKEND',
        help='also measure every mode compiled (torch.compile of train_step '
        'with BACKEND, default inductor), as the Runner does for `compile` '
        'in a config')
    parser.add_argument(
        '--compile-only', action='store_true',
        help='with --compile, measure the compiled modes only (one process '
        'per mode on the device: fewer processes holding GPU memory)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value')
    args = parser.parse_args(argv)
    if args.compile_only and not args.compile:
        parser.error('--compile-only needs --compile.')
    if args.repeats < 1 or args.warmup < 0:
        parser.error('--repeats must be >= 1 and --warmup >= 0.')
    if args.input_size is not None and len(args.input_size) > 2:
        parser.error('--input-size takes H or H W.')
    return args


def parse_sub(text: str) -> Tuple[str, dict]:
    """``'AugPath(ratio=0.5, skip=False)'`` -> ``('AugPath', {...})``."""
    try:
        call = ast.parse(text.strip(), mode='eval').body
        if isinstance(call, ast.Name):
            return call.id, {}
        if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name)
                and not call.args):
            raise ValueError
        return call.func.id, {
            kw.arg: ast.literal_eval(kw.value)
            for kw in call.keywords
        }
    except (SyntaxError, ValueError):
        raise ValueError(
            f'Cannot read sub-model {text!r}: write Type(arg=value, ...) with '
            "literal values, e.g. 'AugMask(ratio=0.5)'.") from None


def load_config(path: str, options: Optional[dict]):
    from mmengine.config import Config

    from augsub_mm.config import resolve_config
    cfg = Config.fromfile(resolve_config(path))
    if options:
        cfg.merge_from_dict(options)
    return cfg


def _pipelines(node):
    """Every transform list named ``pipeline`` inside a dataset config."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == 'pipeline' and isinstance(value, (list, tuple)):
                yield value
            else:
                yield from _pipelines(value)
    elif isinstance(node, (list, tuple)):
        for item in node:
            yield from _pipelines(item)


# Transforms that set the training input size, and the key that holds it.
SIZE_KEYS = dict(RandomResizedCrop='scale', RandomCrop='crop_size',
                 CenterCrop='crop_size', Resize='scale')


def find_input_size(cfg) -> Tuple[int, int]:
    """(H, W) of a training input: the last size-setting transform of the
    training pipeline, else the backbone's ``img_size``."""
    size = None
    for pipeline in _pipelines(cfg.get('train_dataloader', {})):
        for transform in pipeline:
            key = SIZE_KEYS.get(transform.get('type'))
            if key and transform.get(key) is not None:
                size = transform[key]
    if size is None:
        # An mmpretrain backbone's, or a timm model's (TimmClassifier).
        size = (cfg.model.get('backbone') or cfg.model).get('img_size')
    if size is None:
        raise ValueError('Cannot tell the input size from the config: pass '
                         '--input-size H [W].')
    if isinstance(size, int):
        return size, size
    return int(size[1]), int(size[0])  # mmcv sizes are (w, h)


def num_classes(cfg) -> int:
    """The classes of the config's model: its head's, or a timm model's
    (``TimmClassifier``'s ``num_classes``)."""
    head = cfg.model.get('head')
    return (head or cfg.model)['num_classes']


def model_cfg(cfg, sub: Optional[Tuple[str, dict]],
              step_mode: str) -> dict:
    """The config's model as a baseline (``sub=None``) or with ``sub``."""
    model = cfg.model.to_dict()
    model.setdefault('data_preprocessor', cfg.get('data_preprocessor'))
    for key in ('augsub', 'sub_loss', 'step_mode'):
        model.pop(key, None)
    if sub is None:
        if model['type'] in ('AugSubClassifier', 'AugSubTimmClassifier'):
            # The plain classifier of the model's source: a timm model
            # (model_name, no backbone) is a TimmClassifier.
            model['type'] = 'ImageClassifier' if 'backbone' in model else \
                'TimmClassifier'
        return model
    name, kwargs = sub
    model.update(type='AugSubClassifier', augsub=dict(type=name, **kwargs),
                 step_mode=step_mode)
    return model


def optim_cfg(cfg, amp: bool, augsub: bool) -> dict:
    """The config's optimizer wrapper; for AugSub, built the way a user is
    told to (``AugSubOptimWrapperConstructor`` over the recipe's own
    constructor), since AugMask's mask token needs it."""
    from augsub_mm.config import use_augsub_constructor
    optim = cfg.optim_wrapper.to_dict()
    if amp:
        optim['type'] = 'AmpOptimWrapper'
    return use_augsub_constructor(optim) if augsub else optim


# -- the worker: one process per mode ----------------------------------------
def _status_kib(field: str) -> int:
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field + ':'):
                return int(line.split()[1])
    raise RuntimeError(f'{field} not in /proc/self/status')


def _plugin_seconds(profile: cProfile.Profile, plugin_dir: str) -> float:
    """Python time of augsub_mm's own code in a profile: the self time of
    every function defined in augsub_mm (not the torch work it calls), plus
    the full time of entering and leaving each sub-model's ``engage``
    (switching its hooks on and off, swapping modules). Functions called from
    ``engage`` count twice: an upper bound."""
    total = 0.
    for (filename, _, name), (_, _, self_time, cum_time, _) in \
            pstats.Stats(profile).stats.items():
        if not filename.startswith(plugin_dir):
            continue
        total += cum_time if name == 'engage' else self_time
    return total


def worker(conn, job: dict) -> None:
    """Build one mode, then run iterations when the parent says ``step``."""
    try:
        import torch
        if job['threads']:
            torch.set_num_threads(job['threads'])
        import augsub_mm  # noqa: F401
        from mmengine.logging import MMLogger
        from mmengine.model import revert_sync_batchnorm
        from mmengine.optim import build_optim_wrapper
        from mmengine.registry import init_default_scope
        from mmpretrain.registry import MODELS
        from mmpretrain.structures import DataSample
        from mmpretrain.utils import register_all_modules

        cuda = job['device'] == 'cuda'
        # One process per mode: their build-time INFO lines would repeat.
        MMLogger.get_instance('benchmark_augsub', log_level='WARNING')
        # Import every module the build may need before reading the RSS.
        register_all_modules(init_default_scope=False)
        init_default_scope(job['scope'])
        rss_after_imports = 0 if cuda else _status_kib('VmRSS')

        torch.manual_seed(0)
        torch.backends.cudnn.benchmark = job['cudnn_benchmark']
        model = revert_sync_batchnorm(MODELS.build(job['model']))
        model.to(job['device']).train()
        optim_wrapper = build_optim_wrapper(model, job['optim_wrapper'])
        train_step = model.train_step
        if job['compile']:
            train_step = torch.compile(train_step, backend=job['compile'])
        height, width = job['input_size']
        batch = job['batch_size']
        data = dict(
            inputs=[
                torch.randint(0, 256, (3, height, width), dtype=torch.uint8)
                for _ in range(batch)
            ],
            data_samples=[DataSample().set_gt_label(i % job['num_classes'])
                          for i in range(batch)])

        def step() -> float:
            if cuda:
                torch.cuda.synchronize()
            start = time.perf_counter()
            train_step(data, optim_wrapper)
            if cuda:
                torch.cuda.synchronize()
            return time.perf_counter() - start

        def graphs() -> int:
            # Graphs TorchDynamo compiled so far: growth during the timed
            # iterations means their times include compiling.
            from torch._dynamo.utils import counters
            return int(counters['stats'].get('unique_graphs', 0))

        conn.send(('ready', None))
        while conn.recv() == 'step':
            seconds = step()
            conn.send(('time', (seconds, graphs())))

        if cuda:
            peak_mib = torch.cuda.max_memory_allocated() / 2**20
        else:
            peak_mib = (_status_kib('VmHWM') - rss_after_imports) / 2**10
        overhead = None
        if job['overhead']:
            runs = 2
            profile = cProfile.Profile()
            profile.enable()
            for _ in range(runs):
                step()
            profile.disable()
            plugin_dir = osp.join(osp.dirname(augsub_mm.__file__), '')
            overhead = _plugin_seconds(profile, plugin_dir) / runs
        conn.send(('done', dict(peak_mib=peak_mib, overhead_s=overhead)))
    except Exception:
        conn.send(('error', traceback.format_exc()))
    finally:
        conn.close()


# -- the parent: interleave the modes and print the table --------------------
def machine(device: str, threads: Optional[int]) -> str:
    import torch
    if device == 'cuda':
        return f'{torch.cuda.get_device_name()}, torch {torch.__version__}'
    cpu = platform.processor() or platform.machine()
    try:
        with open('/proc/cpuinfo') as f:
            cpu = next(line.split(':', 1)[1].strip() for line in f
                       if line.startswith('model name'))
    except (OSError, StopIteration):
        pass
    return (f'{cpu}, {os.cpu_count()} cores, {threads or "default"} torch '
            f'threads per process, torch {torch.__version__}')


def run(args: argparse.Namespace) -> Tuple[List[dict], dict]:
    """Measure every mode; returns one dict per mode and the settings."""
    import torch
    cfg = load_config(args.config, args.cfg_options)
    device = args.device or ('cuda' if torch.cuda.is_available() else 'cpu')
    if device == 'cuda' and not torch.cuda.is_available():
        raise SystemExit('--device cuda: CUDA is not available here.')
    if args.amp and device != 'cuda':
        raise SystemExit('--amp needs CUDA: mmengine\'s AmpOptimWrapper '
                         'refuses to run on the CPU.')
    if args.input_size:
        input_size = (args.input_size[0], args.input_size[-1])
    else:
        input_size = find_input_size(cfg)
    batch_size = args.batch_size or cfg.train_dataloader.batch_size
    modes = [dict(label='baseline', sub=None, step_mode='two_pass')]
    for text in args.sub:
        head, _, last = text.strip().rpartition(' ')
        if head and last in STEP_MODES:
            text, step_modes = head.strip(), [last]
        else:
            step_modes = args.step_modes
        sub = parse_sub(text)
        for step_mode in step_modes:
            label = text if step_mode == 'two_pass' else f'{text} {step_mode}'
            modes.append(dict(label=label, sub=sub, step_mode=step_mode))
    for mode in list(modes):
        mode['compile'] = None
        if args.compile:
            modes.append(dict(mode, label=f"{mode['label']} compiled",
                              compile=args.compile))
    if getattr(args, 'compile_only', False):
        modes = [mode for mode in modes if mode['compile']]

    if device == 'cpu':
        # glibc keeps freed blocks below its (growing) mmap threshold in the
        # heap, so the RSS of a process that frees one pass's activations
        # and allocates the next stays far above its live memory (ResNet-50,
        # batch 8: +370 MiB). A fixed threshold returns freed tensors to the
        # OS, and the peak RSS follows the peak of live memory.
        os.environ.setdefault('MALLOC_MMAP_THRESHOLD_', str(CPU_MMAP_BYTES))
    context = mp.get_context('spawn')
    for mode in modes:
        job = dict(
            model=model_cfg(cfg, mode['sub'], mode['step_mode']),
            optim_wrapper=optim_cfg(cfg, args.amp, mode['sub'] is not None),
            scope=cfg.get('default_scope', 'mmpretrain'),
            cudnn_benchmark=cfg.get('env_cfg', {}).get(
                'cudnn_benchmark', False),
            num_classes=num_classes(cfg),
            input_size=input_size, batch_size=batch_size, device=device,
            threads=args.threads, compile=mode['compile'],
            overhead=args.overhead and mode['sub'] is not None)
        conn, child_conn = context.Pipe()
        mode.update(conn=conn, times=[], graphs=[], error=None,
                    process=context.Process(target=worker,
                                            args=(child_conn, job)))
        mode['process'].start()
        child_conn.close()
    for mode in modes:
        receive(mode)

    load_before = os.getloadavg()
    live = [mode for mode in modes if mode['error'] is None]
    for round_ in range(args.warmup + args.repeats):
        # Rotate who goes first, so that no mode always follows another.
        shift = round_ % max(len(live), 1)
        for mode in live[shift:] + live[:shift]:
            if mode['error'] is not None:
                continue
            mode['conn'].send('step')
            answer = receive(mode)
            if answer is not None:
                mode['graphs'].append(answer[1])
                if round_ >= args.warmup:
                    mode['times'].append(answer[0])
    for mode in modes:
        if mode['error'] is None:
            mode['conn'].send('stop')
            mode.update(receive(mode) or {})
        mode['process'].join()
    settings = dict(config=args.config, device=device, amp=args.amp,
                    compile=args.compile,
                    machine=machine(device, args.threads),
                    batch_size=batch_size, input_size=input_size,
                    repeats=args.repeats, warmup=args.warmup,
                    load=(load_before, os.getloadavg()))
    return modes, settings


def graphs_while_timed(mode: dict, warmup: int) -> int:
    """Graphs TorchDynamo compiled during the timed iterations of a mode
    (recompilations whose time is in its times)."""
    graphs = mode.get('graphs') or []
    if len(graphs) <= warmup:  # no timed iteration recorded
        return 0
    return graphs[-1] - (graphs[warmup - 1] if warmup else 0)


def receive(mode: dict):
    """The worker's next answer; an error ends that mode."""
    try:
        kind, value = mode['conn'].recv()
    except EOFError:
        kind, value = 'error', 'the worker process died (out of memory?)'
    if kind == 'error':
        mode['error'] = value
        return None
    return value


def format_table(modes: List[dict], settings: dict) -> str:
    """The Markdown table of results, with a header that says what and how."""
    height, width = settings['input_size']
    memory = ('torch.cuda.max_memory_allocated per process'
              if settings['device'] == 'cuda' else
              'peak RSS (VmHWM) of the process minus its RSS after imports, '
              'MALLOC_MMAP_THRESHOLD_='
              f"{os.environ.get('MALLOC_MMAP_THRESHOLD_')}")
    lines = [
        f"config: {settings['config']}",
        f"device: {settings['device']}{' (AMP)' if settings['amp'] else ''}"
        f" -- {settings['machine']}",
        f"batch {settings['batch_size']}, input {height}x{width}, synthetic "
        f"data; median of {settings['repeats']} iterations per mode after "
        f"{settings['warmup']} warm-up, modes interleaved, one process each",
        f'peak memory: {memory}',
        'load average (1 min) before / after: '
        f"{settings['load'][0][0]:.2f} / {settings['load'][1][0]:.2f}",
        '',
    ]
    with_overhead = any(m.get('overhead_s') is not None for m in modes)
    header = ['mode', 'time / iter (s)', 'x baseline', 'min - max (s)',
              'x baseline (min)', 'peak memory (MiB)', 'x baseline']
    if with_overhead:
        header.append('plugin Python (% of iter)')
    lines += ['| ' + ' | '.join(header) + ' |',
              '|' + '---|' * len(header)]
    base = modes[0]
    base_time = statistics.median(base['times']) if base['times'] else None
    base_min = min(base['times']) if base['times'] else None
    for mode in modes:
        if mode['error'] is not None:
            reason = mode['error'].strip().splitlines()[-1]
            lines.append(f"| {mode['label']} | failed: {reason} |")
            continue
        median = statistics.median(mode['times'])
        row = [mode['label'], f'{median:.3f}',
               _ratio(median, base_time),
               f"{min(mode['times']):.3f} - {max(mode['times']):.3f}",
               _ratio(min(mode['times']), base_min),
               f"{mode['peak_mib']:.0f}",
               _ratio(mode['peak_mib'], base.get('peak_mib'))]
        if with_overhead:
            overhead = mode.get('overhead_s')
            row.append('-' if overhead is None else
                       f'{overhead * 1e3:.1f} ms ({overhead / median:.2%})')
        lines.append('| ' + ' | '.join(row) + ' |')
    if settings.get('compile'):
        lines += ['', f"compiled ({settings['compile']}) / eager, median "
                  'time per iteration:']
        eager = {m['label']: m for m in modes if not m['compile']}
        for mode in modes:
            twin = eager.get(mode['label'].rsplit(' compiled', 1)[0])
            if mode['compile'] and twin and mode['times'] and twin['times']:
                ratio = statistics.median(mode['times']) / statistics.median(
                    twin['times'])
                recompiled = graphs_while_timed(mode, settings['warmup'])
                lines.append(f"- {twin['label']}: {ratio:.2f}" + (
                    f' ({recompiled} graphs compiled during the timed '
                    'iterations)' if recompiled else ''))
    return '\n'.join(lines)


def _ratio(value: float, base: Optional[float]) -> str:
    return f'{value / base:.2f}' if base else '-'


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    modes, settings = run(args)
    print(format_table(modes, settings), flush=True)
    failed = [mode for mode in modes if mode['error'] is not None]
    for mode in failed:
        print(f"\n{mode['label']} failed:\n{mode['error']}")
    return 1 if failed else 0


if __name__ == '__main__':
    raise SystemExit(main())
