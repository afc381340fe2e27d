"""The Fashion-MNIST study: the paper's claims, tested on real data.

`Augmenting Sub-model to Improve Main Model
<https://arxiv.org/abs/2306.11339>`_ claims that (1) every sub-model
(AugMask, AugDrop, AugPath) improves top-1 over the baseline, (2) the main
model's training loss converges faster with AugMask, and (3) masking at a
high ratio hurts in the main recipe but not in the sub-model. This driver
trains the configs of ``configs/fashion_mnist`` (a small ViT and a small
ResNet, a fixed 2k-image training subset, the full 10k test set) with
mmengine's Runner, for several seeds, and answers each claim with numbers.

Outputs under ``--out`` (default ``results/fashion_mnist``):
``runs/<arch>_<variant>_seed<seed>.{json,csv}`` per run, ``summary.csv``,
``summary.md`` (table and claims), ``loss_curves_<arch>.png`` and
``top1.png``. A run whose JSON exists with the same config settings is not
trained again, so an interrupted study resumes where it stopped (code
changes are not detected: delete the records to retrain after one).

Examples::

    python tools/study/run_study.py            # the whole study (~90 min)
    python tools/study/run_study.py --smoke    # plumbing check (~2 min)
    python tools/study/run_study.py --archs vit --variants baseline augmask
"""
import argparse
import csv
import hashlib
import json
import math
import os
import os.path as osp
import re
import shlex
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from typing import Dict, List, Optional

HERE = osp.dirname(osp.abspath(__file__))
REPO = osp.dirname(osp.dirname(HERE))
# MaskedMainClassifier (claim 3) lives next to this file; the log reader is
# shared with tools/analysis_tools/compare_runs.py.
sys.path[:0] = [HERE, osp.join(REPO, 'tools', 'analysis_tools')]

from compare_runs import plot_runs, read_log  # noqa: E402

CONFIG_DIR = osp.join(REPO, 'configs', 'fashion_mnist')
CONFIG = '{model}_1xb64{variant}_fashion-mnist-2k.py'
#: arch -> (label, config prefix)
ARCHS = {
    'vit': ('ViT (6 layers, 64 dims, patch 4)', 'vit-tiny-p4'),
    'resnet': ('ResNet-18 (CIFAR stem, width 16)', 'resnet18-w16'),
}
#: variant -> (label, config infix)
VARIANTS = {
    'baseline': ('baseline', ''),
    'augmask': ('+ AugMask 0.5', '-augmask'),
    'augdrop': ('+ AugDrop 0.5', '-augdrop'),
    'augpath': ('+ AugPath 0.5', '-augpath'),
    'augmask-r0.75': ('+ AugMask 0.75 (sub-model)', '-augmask-r0.75'),
    'masked-r0.75': ('masked training 0.75 (main recipe)', '-masked-r0.75'),
}
SUB_MODELS = ('augmask', 'augdrop', 'augpath')
#: Training cost per image relative to the baseline, measured on one CPU
#: thread, mean of the ViT and the ResNet; only the order in which runs are
#: started depends on it: longest first, so no long run is left for last.
COST = {'baseline': 1.0, 'augmask': 1.7, 'augdrop': 2.7, 'augpath': 1.8,
        'augmask-r0.75': 1.6, 'masked-r0.75': 0.6}
#: Runs the study has no config for, and why.
NOT_APPLICABLE = {
    ('resnet', 'augdrop'): 'the ResNet has no dropout layers, and AugSub '
    'refuses AugDrop for it'}
SEEDS = (0, 1, 2)
#: Overrides of the smoke version: same configs and code path, tiny sizes.
SMOKE = dict(num_train=256, num_test=500, epochs=2, seeds=(0, 1))
#: Checkpoints of claim (2), as fractions of the training epochs.
LOSS_POINTS = (0.25, 0.5, 0.75, 1.0)
DOCS_BEGIN = '<!-- study:begin (written by tools/study/run_study.py) -->'
DOCS_END = '<!-- study:end -->'


def config_path(arch: str, variant: str) -> str:
    return osp.join(CONFIG_DIR, CONFIG.format(
        model=ARCHS[arch][1], variant=VARIANTS[variant][1]))


# -- one run ------------------------------------------------------------
def build_cfg(arch: str, variant: str, seed: int, work_root: str,
              data_root: str, smoke: bool, verbose: bool):
    """The run's config: the study config, with seed, data root and work
    dir set (and the smoke sizes with ``smoke``)."""
    from mmengine.config import Config
    cfg = Config.fromfile(config_path(arch, variant))
    cfg.randomness.seed = seed
    loaders = [cfg.train_dataloader, cfg.val_dataloader, cfg.test_dataloader]
    for loader in loaders:
        loader.dataset.data_root = data_root
    if smoke:
        epochs = SMOKE['epochs']
        cfg.train_dataloader.dataset.indices = SMOKE['num_train']
        cfg.val_dataloader.dataset.indices = SMOKE['num_test']
        cfg.test_dataloader.dataset.indices = SMOKE['num_test']
        cfg.train_cfg.max_epochs = epochs
        cfg.train_cfg.val_interval = 1
        cfg.param_scheduler = [dict(
            type='CosineAnnealingLR', by_epoch=True, begin=0, end=epochs,
            eta_min=1e-5, convert_to_iter_based=True)]
    name = run_name(arch, variant, seed)
    cfg.work_dir = osp.join(work_root, name)
    cfg.experiment_name = name
    if not verbose:
        cfg.log_level = 'WARNING'
    return cfg


def run_name(arch: str, variant: str, seed: int) -> str:
    return f'{arch}_{variant}_seed{seed}'


def _drop_default_scope(node, scope: str):
    """``node`` without the ``_scope_`` keys that name ``scope``: mmengine
    adds them to what a config inherits from ``mmpretrain::`` files, and
    they select the registry that the default scope selects anyway."""
    if isinstance(node, dict):
        return {k: _drop_default_scope(v, scope) for k, v in node.items()
                if not (k == '_scope_' and v == scope)}
    if isinstance(node, (list, tuple)):
        return [_drop_default_scope(v, scope) for v in node]
    return node


def fingerprint(cfg, data_root: str) -> str:
    """Hash of everything in the config that can change a result (not where
    the data or the work dir are)."""
    settings = cfg.to_dict()
    for key in ('work_dir', 'experiment_name', 'log_level'):
        settings.pop(key, None)
    settings = _drop_default_scope(settings, settings.get('default_scope'))
    text = json.dumps(settings, sort_keys=True, default=str).replace(
        json.dumps(data_root)[1:-1], '<data_root>')
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def train_run(cfg) -> dict:
    """Train one config with mmengine's Runner; return its sizes, timing
    and per-epoch curves."""
    import torch
    from mmengine.runner import Runner
    runner = Runner.from_cfg(cfg)
    start, cpu_start = time.time(), time.process_time()
    runner.train()
    seconds, cpu_seconds = time.time() - start, time.process_time() - cpu_start
    return dict(num_train=len(runner.train_loop.dataloader.dataset),
                num_test=len(runner.val_loop.dataloader.dataset),
                epochs=runner.train_loop.max_epochs,
                train_time_s=round(seconds, 1),
                cpu_time_s=round(cpu_seconds, 1),
                torch_threads=torch.get_num_threads(),
                curves=read_log(runner.log_dir))


def save_run(path: str, record: dict) -> None:
    with open(path + '.json', 'w') as f:
        json.dump(record, f, indent=1)
    curves = record['curves']
    top1 = dict(zip(curves['val_epoch'], curves['top1']))
    with open(path + '.csv', 'w', newline='') as f:
        writer = csv.writer(f)
        writer.writerow(['epoch', 'loss', 'loss_sub', 'top1'])
        for i, epoch in enumerate(curves['epoch']):
            writer.writerow([
                epoch, f"{curves['loss'][i]:.5f}",
                f"{curves['loss_sub'][i]:.5f}" if curves['loss_sub'] else '',
                top1.get(epoch, '')])


def load_run(path: str, fp: str) -> Optional[dict]:
    """The saved record at ``path`` if it was made with settings ``fp``."""
    if not osp.isfile(path + '.json'):
        return None
    with open(path + '.json') as f:
        record = json.load(f)
    return record if record.get('fingerprint') == fp else None


def train_and_save(arch: str, variant: str, seed: int, opts: dict) -> dict:
    """Train one run and save its record (in a worker process)."""
    cfg = build_cfg(arch, variant, seed, opts['work_root'], opts['data_root'],
                    opts['smoke'], opts['verbose'])
    record = dict(arch=arch, variant=variant, seed=seed,
                  config=osp.relpath(config_path(arch, variant), REPO),
                  fingerprint=fingerprint(cfg, opts['data_root']),
                  **train_run(cfg))
    record['top1'] = record['curves']['top1'][-1]
    save_run(osp.join(opts['out'], 'runs', run_name(arch, variant, seed)),
             record)
    return record


def _init_worker(threads: int) -> None:
    import torch
    torch.set_num_threads(threads)
    import augsub_mm  # noqa: F401  (registers AugSub)
    import masked_main  # noqa: F401  (registers MaskedMainClassifier)


def run_all(archs, variants, seeds, jobs: int, train: bool = True,
            **opts) -> List[dict]:
    """Train every run of the grid that has no up-to-date record, ``jobs``
    at a time; return the records of the whole grid, in grid order. With
    ``train=False`` nothing is trained: runs without a record are left out
    (and said so)."""
    os.makedirs(osp.join(opts['out'], 'runs'), exist_ok=True)
    grid = [(a, v, s) for a in archs for v in variants for s in seeds
            if osp.isfile(config_path(a, v))]
    records, todo = {}, []
    for key in grid:
        cfg = build_cfg(*key, opts['work_root'], opts['data_root'],
                        opts['smoke'], opts['verbose'])
        record = load_run(osp.join(opts['out'], 'runs', run_name(*key)),
                          fingerprint(cfg, opts['data_root']))
        if record is None:
            todo.append(key)
        else:
            records[key] = record
            print(f'{run_name(*key)}: top-1 {record["top1"]:.2f} (done '
                  'before, skipped)', flush=True)
    if not train:
        for key in todo:
            print(f'{run_name(*key)}: no record, left out (--no-train)',
                  flush=True)
        return [records[key] for key in grid if key in records]
    # Tiny models use threads poorly: one thread per run, runs in parallel.
    threads = max(1, (os.cpu_count() or 1) // jobs)
    start = time.time()
    with ProcessPoolExecutor(
            jobs, mp_context=get_context('spawn'), initializer=_init_worker,
            initargs=(threads, )) as pool:
        futures = {pool.submit(train_and_save, *key, opts): key
                   for key in sorted(todo, key=lambda k: -COST[k[1]])}
        try:
            for done, future in enumerate(as_completed(futures), 1):
                key, record = futures[future], future.result()
                records[key] = record
                elapsed = time.time() - start
                print(f'[{done}/{len(todo)}] {run_name(*key)}: top-1 '
                      f'{record["top1"]:.2f}, {record["train_time_s"]:.0f} s;'
                      f' {elapsed / 60:.0f} min so far, ~'
                      f'{elapsed / done * (len(todo) - done) / 60:.0f} min '
                      'left', flush=True)
        except BaseException:
            pool.shutdown(cancel_futures=True)
            raise
    return [records[key] for key in grid]


# -- summary ------------------------------------------------------------
def group(records: List[dict]) -> Dict[str, Dict[str, List[dict]]]:
    out = {}
    for r in records:
        out.setdefault(r['arch'], {}).setdefault(r['variant'], []).append(r)
    return out


def mean_std(values: List[float]):
    std = statistics.stdev(values) if len(values) > 1 else float('nan')
    return statistics.mean(values), std


def fmt(mean: float, std: float, digits: int = 2) -> str:
    if math.isnan(std):
        return f'{mean:.{digits}f}'
    return f'{mean:.{digits}f} ± {std:.{digits}f}'


def mean_curves(runs: List[dict]) -> dict:
    """Seed-averaged curves (same layout as compare_runs.read_log)."""
    curves = [r['curves'] for r in runs]
    out = dict(epoch=curves[0]['epoch'], val_epoch=curves[0]['val_epoch'])
    for key in ('loss', 'loss_sub', 'top1'):
        columns = list(zip(*[c[key] for c in curves]))
        out[key] = [statistics.mean(col) for col in columns]
    return out


def loss_at(curve: dict, fraction: float) -> float:
    epochs = curve['epoch']
    return curve['loss'][max(0, math.ceil(fraction * len(epochs)) - 1)]


def answer(yes: bool) -> str:
    return '**yes**' if yes else '**no**'


def summarize(records: List[dict]) -> Dict[str, str]:
    """The summary table, the claims (answered from the numbers) and the
    CSV rows; returns ``dict(table=..., claims=..., csv=[...])``."""
    by_arch = group(records)
    rows, table = [], [
        '| model | training | top-1 % (mean ± std) | Δ vs baseline | '
        'seeds | final main train loss | CPU min per run |',
        '|---|---|---|---|---|---|---|']
    for arch, variants in by_arch.items():
        base = variants.get('baseline')
        base_mean = mean_std([r['top1'] for r in base])[0] if base else None
        for variant in VARIANTS:
            runs = variants.get(variant)
            if not runs:
                continue
            m, s = mean_std([r['top1'] for r in runs])
            lm, ls = mean_std([r['curves']['loss'][-1] for r in runs])
            # CPU time of the training (one torch thread per run): unlike
            # wall time, other jobs on the machine do not inflate it.
            minutes = statistics.mean(r['cpu_time_s'] for r in runs) / 60
            delta = '' if base_mean is None or variant == 'baseline' else \
                f'{m - base_mean:+.2f}'
            table.append(
                f'| {ARCHS[arch][0]} | {VARIANTS[variant][0]} | {fmt(m, s)} '
                f'| {delta} | {len(runs)} | {fmt(lm, ls, 3)} | '
                f'{minutes:.1f} |')
            rows.append(dict(arch=arch, variant=variant, seeds=len(runs),
                             top1_mean=round(m, 3),
                             top1_std=round(s, 3), delta=delta,
                             final_loss_mean=round(lm, 4),
                             cpu_minutes_per_run=round(minutes, 2)))
    return dict(table='\n'.join(table), claims=claims(by_arch), csv=rows)


def claims(by_arch) -> str:
    """Each claim answered yes / no from the numbers; the criteria were set
    before any run (see the README's Results)."""
    one, two, three = [], [], []
    for arch, v in by_arch.items():
        name = ARCHS[arch][0]
        if 'baseline' not in v:
            continue
        bm, bs = mean_std([r['top1'] for r in v['baseline']])
        for sub in SUB_MODELS:
            if (arch, sub) in NOT_APPLICABLE:
                one.append(f'- {name}, {VARIANTS[sub][0]}: n/a -- '
                           f'{NOT_APPLICABLE[arch, sub]}.')
            if sub not in v:
                continue
            m, s = mean_std([r['top1'] for r in v[sub]])
            noise = math.hypot(bs, s)
            beyond = '' if math.isnan(noise) else (
                f"; {'beyond' if abs(m - bm) > noise else 'within'} one "
                f'combined std ({noise:.2f})')
            one.append(f'- {name}, {VARIANTS[sub][0]}: {answer(m > bm)} -- '
                       f'{fmt(m, s)} vs {fmt(bm, bs)} '
                       f'({m - bm:+.2f}{beyond}).')
        if 'augmask' in v:
            base, sub = mean_curves(v['baseline']), mean_curves(v['augmask'])
            points = [(f, loss_at(base, f), loss_at(sub, f))
                      for f in LOSS_POINTS]
            text = ', '.join(
                f'{f:.0%} of training: {s:.3f} vs {b:.3f}'
                for f, b, s in points)
            two.append(f'- {name}: {answer(all(s < b for _, b, s in points))}'
                       f' -- main loss with AugMask vs baseline at {text}.')
        if 'masked-r0.75' in v and 'augmask-r0.75' in v:
            mm, ms = mean_std([r['top1'] for r in v['masked-r0.75']])
            am, as_ = mean_std([r['top1'] for r in v['augmask-r0.75']])
            three.append(
                f'- {name}: {answer(mm < bm and am >= bm)} -- masked '
                f'training 0.75: {fmt(mm, ms)} ({mm - bm:+.2f}, '
                f"{'hurts' if mm < bm else 'does not hurt'}); AugMask 0.75 "
                f'in the sub-model: {fmt(am, as_)} ({am - bm:+.2f}, '
                f"{'hurts' if am < bm else 'does not hurt'}); baseline "
                f'{fmt(bm, bs)}.')
    not_run = ['- not run.']
    return '\n'.join([
        '**(1) Each sub-model improves top-1 over the baseline** (yes: the '
        'mean over seeds is higher).', *(one or not_run), '',
        '**(2) The main branch\'s training loss converges faster with '
        'AugMask** (yes: the seed-mean main training loss is lower than the '
        'baseline\'s at each of 25/50/75/100% of the epochs).',
        *(two or not_run), '',
        '**(3) Masking 0.75 in the main recipe hurts, the same ratio in the '
        'sub-model does not** (yes: masked training is below the baseline '
        'mean and AugMask 0.75 is not).', *(three or not_run)])


def variant_color(variant: str) -> str:
    """One colour per variant, the same in every plot of the study."""
    return f'C{list(VARIANTS).index(variant)}'


def plot_top1(by_arch, out: str) -> str:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(by_arch), figsize=(6 * len(by_arch), 4),
                             squeeze=False)
    for ax, (arch, v) in zip(axes[0], by_arch.items()):
        names = [n for n in VARIANTS if n in v]
        stats = [mean_std([r['top1'] for r in v[n]]) for n in names]
        means = [m for m, _ in stats]
        errs = [0 if math.isnan(s) else s for _, s in stats]
        ax.bar(range(len(names)), means, yerr=errs, capsize=4,
               color=[variant_color(n) for n in names])
        if 'baseline' in v:
            ax.axhline(means[0], color='k', linewidth=0.8, linestyle=':')
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels([VARIANTS[n][0].lstrip('+ ') for n in names],
                           rotation=30, ha='right', fontsize=8)
        low = min(m - e for m, e in zip(means, errs))
        high = max(m + e for m, e in zip(means, errs))
        pad = max(0.5, (high - low) * 0.3)
        ax.set_ylim(low - pad, high + pad)
        ax.set(ylabel='top-1 % on the 10k test set (mean ± std)',
               title=ARCHS[arch][0])
        ax.grid(axis='y', alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def write_summary(records: List[dict], out: str, docs: Optional[str],
                  command: str) -> str:
    """Write summary.csv, summary.md and the plots; refresh the study block
    of ``docs``. Returns the markdown."""
    summary = summarize(records)
    with open(osp.join(out, 'summary.csv'), 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=list(summary['csv'][0]))
        writer.writeheader()
        writer.writerows(summary['csv'])
    by_arch = group(records)
    plots = [plot_top1(by_arch, osp.join(out, 'top1.png'))]
    for arch, v in by_arch.items():
        names = [n for n in VARIANTS if n in v]
        plots.append(plot_runs(
            [(VARIANTS[n][0], mean_curves(v[n])) for n in names],
            osp.join(out, f'loss_curves_{arch}.png'),
            f'{ARCHS[arch][0]} on Fashion-MNIST (mean over seeds)',
            log_loss=True, colors=[variant_color(n) for n in names]))
    first = records[0]
    cpu_minutes = sum(r['cpu_time_s'] for r in records) / 60
    settings = (f"{first['num_train']} training images, {first['epochs']} "
                f"epochs, top-1 on {first['num_test']} test images, seeds "
                f"{sorted({r['seed'] for r in records})}; training took "
                f"{cpu_minutes:.0f} CPU-minutes over {len(records)} runs "
                f"(about {cpu_minutes / 2:.0f} minutes with `--jobs 2` on "
                f"2 free cores)")

    def markdown(prefix: str) -> str:
        images = '\n'.join(
            f'![{osp.basename(p)}]({prefix}{osp.basename(p)})'
            for p in plots)
        return '\n\n'.join([
            f'Settings: {settings}. Command: `{command}`.', summary['table'],
            summary['claims'], images]) + '\n'

    text = markdown('')
    with open(osp.join(out, 'summary.md'), 'w') as f:
        f.write('# Fashion-MNIST study: summary\n\n' + text)
    if docs:
        # Image links relative to the markdown file that shows them.
        prefix = osp.relpath(out, osp.dirname(osp.abspath(docs))).replace(
            os.sep, '/') + '/'
        update_docs(docs, markdown(prefix))
    return text


def update_docs(path: str, block: str) -> None:
    """Replace the text between the study markers of ``path``."""
    with open(path) as f:
        text = f.read()
    pattern = re.compile(re.escape(DOCS_BEGIN) + '.*?' + re.escape(DOCS_END),
                         re.S)
    if not pattern.search(text):
        raise ValueError(f'{path} has no {DOCS_BEGIN} ... {DOCS_END} block '
                         'to write the results into; add one, or pass '
                         '--docs "".')
    with open(path, 'w') as f:
        f.write(pattern.sub(
            lambda _: f'{DOCS_BEGIN}\n{block}{DOCS_END}', text))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Train the Fashion-MNIST study (baseline vs AugMask, '
        'AugDrop, AugPath; masked training) and answer the paper\'s claims.')
    parser.add_argument('--smoke', action='store_true',
                        help=f'tiny version of the same study: '
                        f'{SMOKE}; writes under work_dirs/ unless --out')
    parser.add_argument('--archs', nargs='+', choices=list(ARCHS),
                        default=list(ARCHS))
    parser.add_argument('--variants', nargs='+', choices=list(VARIANTS),
                        default=list(VARIANTS))
    parser.add_argument('--seeds', nargs='+', type=int,
                        help=f'default: {list(SEEDS)} ({list(SMOKE["seeds"])}'
                        ' with --smoke)')
    parser.add_argument('--out', help='results folder (default: '
                        'results/fashion_mnist; work_dirs/fashion_mnist_'
                        'smoke/results with --smoke)')
    parser.add_argument('--work-dir', help='where the runs\' work dirs go '
                        '(default: work_dirs/fashion_mnist_study[_smoke])')
    parser.add_argument(
        '--data-root', default=os.environ.get(
            'FMNIST_ROOT', osp.join(REPO, 'data', 'fashion_mnist')),
        help='Fashion-MNIST folder (default: $FMNIST_ROOT, else '
        'data/fashion_mnist); made from Debian\'s dataset-fashion-mnist if '
        'missing')
    parser.add_argument('--docs', help='markdown file whose study block '
                        'gets the summary (default: README.md for the '
                        'whole study in results/fashion_mnist, none for a '
                        'piece of it or --smoke; "" for none)')
    parser.add_argument('--jobs', type=int, default=os.cpu_count() or 1,
                        help='runs trained in parallel, each with '
                        'cpu_count // jobs torch threads (default: '
                        'cpu_count)')
    parser.add_argument('--verbose', action='store_true',
                        help='keep mmengine\'s INFO logging on the console')
    parser.add_argument('--no-train', action='store_true',
                        help='train nothing: summarize the runs that have a '
                        'record, and list the others as left out')
    return parser.parse_args(argv)


def docs_target(args, seeds) -> Optional[str]:
    """The markdown file whose study block gets the summary: ``--docs`` if
    given, else README.md for the whole study in results/fashion_mnist.
    The README shows the whole study: a piece of it (some models, variants
    or seeds), the smoke version or another results folder leave it alone.
    """
    if args.docs is not None:
        return args.docs or None
    whole = (not args.smoke and args.out is None
             and set(args.archs) == set(ARCHS)
             and set(args.variants) == set(VARIANTS)
             and set(seeds) == set(SEEDS))
    return osp.join(REPO, 'README.md') if whole else None


def main(argv=None):
    args = parse_args(argv)
    suffix = '_smoke' if args.smoke else ''
    out = args.out or osp.join(
        REPO, *(('work_dirs', 'fashion_mnist_smoke', 'results')
                if args.smoke else ('results', 'fashion_mnist')))
    work_root = args.work_dir or osp.join(REPO, 'work_dirs',
                                          'fashion_mnist_study' + suffix)
    seeds = args.seeds or (SMOKE['seeds'] if args.smoke else SEEDS)
    docs = docs_target(args, seeds)

    from augsub_mm.utils import prepare_fashion_mnist
    prepare_fashion_mnist(args.data_root)

    records = run_all(args.archs, args.variants, seeds, args.jobs,
                      train=not args.no_train, out=out,
                      work_root=work_root, data_root=args.data_root,
                      smoke=args.smoke, verbose=args.verbose)
    if not records:
        raise SystemExit(f'No run of this grid has a record in {out}/runs: '
                         'nothing to summarize (drop --no-train to train).')
    given = list(sys.argv[1:] if argv is None else argv)
    grid = [1 for a in args.archs for v in args.variants for _ in seeds
            if osp.isfile(config_path(a, v))]
    if len(records) == len(grid):
        # Nothing was left out: the same command without --no-train
        # reproduces the summary (it trains what has no record).
        given = [a for a in given if a != '--no-train']
    command = shlex.join(['python', 'tools/study/run_study.py', *given])
    print(write_summary(records, out, docs, command))
    print(f'Results in {out}')


if __name__ == '__main__':
    main()
