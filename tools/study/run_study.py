"""The Fashion-MNIST study: the paper's claims, tested on real data.

`Augmenting Sub-model to Improve Main Model
<https://arxiv.org/abs/2306.11339>`_ claims that (1) every sub-model
(AugMask, AugDrop, AugPath) improves top-1 over the baseline, (2) the main
model's training loss converges faster with AugMask, and (3) masking at a
high ratio hurts in the main recipe but not in the sub-model. This driver
trains the configs of ``configs/fashion_mnist`` (a small ViT and a small
ResNet, evaluated on the full 10k test set) with mmengine's Runner, for
several seeds, and answers each claim with numbers, in two regimes
(``--regime``):

- ``overfit`` (default): a fixed 2k-image training subset, 60 epochs,
  flips only: the models over-fit, regularization has work to do.
- ``heavy``: the paper's kind of recipe (RandAugment, Mixup + CutMix, soft
  targets), 6x the images and a short schedule: the models under-fit.
  Its AugDrop is a ratio sweep, chosen on held-out training images.

Outputs under ``--out`` (default ``results/fashion_mnist``, and its
``heavy/`` folder for the heavy regime):
``runs/<arch>_<variant>_seed<seed>.{json,csv}`` per run, ``summary.csv``,
``summary.md`` (table and claims), ``loss_curves_<arch>.png`` and
``top1.png``. A run whose JSON exists with the same config settings is not
trained again, so an interrupted study resumes where it stopped (code
changes are not detected: delete the records to retrain after one).

Examples::

    python tools/study/run_study.py --jobs 2   # the over-fitting regime
    python tools/study/run_study.py --regime heavy --jobs 2  # ~70 min
    python tools/study/run_study.py --smoke    # plumbing check (~2 min)
    python tools/study/run_study.py --archs vit --variants baseline augmask
    python tools/study/run_study.py --no-train # both regimes' summaries
"""
import argparse
import copy
import csv
import functools
import gc
import hashlib
import json
import math
import os
import os.path as osp
import re
import shlex
import signal
import statistics
import sys
import time
from concurrent.futures import (FIRST_COMPLETED, ProcessPoolExecutor,
                                wait)
from multiprocessing import get_context
from typing import Dict, List, Optional, Tuple

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
#: Sized for the test suite's time (tests/test_study_smoke.py): 64 images
#: are 2 iterations of 32 per epoch, so each epoch's mean loss still
#: averages steps (half the configs' batch of 64: the training steps, most
#: of a smoke run's time, cost half as much); 50 test images, less than
#: one validation batch.
SMOKE = dict(num_train=64, batch_size=32, num_test=50, epochs=2,
             seeds=(0, 1), num_heldout=100)
#: Checkpoints of claim (2), as fractions of the training epochs.
LOSS_POINTS = (0.25, 0.5, 0.75, 1.0)
DOCS_BEGIN = '<!-- study:begin (written by tools/study/run_study.py) -->'
DOCS_END = '<!-- study:end -->'
#: The block of both regimes' claims side by side (README, Results).
BOTH_BEGIN = ('<!-- study-both:begin (written by tools/study/run_study.py)'
              ' -->')
BOTH_END = '<!-- study-both:end -->'


class Regime:
    """One regime of the study: its configs, runs, outputs and claims."""

    def __init__(self, name: str, title: str, config_dir: str, config: str,
                 variants: Dict[str, Tuple[str, str]],
                 cost: Dict[str, float], sub_models: Tuple[str, ...],
                 docs: Tuple[str, str], subdir: str = '', data: str = '',
                 sweep: Optional[dict] = None, claims: Tuple[int, ...] = (
                     1, 2, 3), estimate: str = ''):
        self.name = name
        #: Short title, used in headings, plots and the side-by-side table.
        self.title = title
        self.config_dir = config_dir
        self.config = config
        self.variants = variants
        self.cost = cost
        #: Claim (1)'s sub-models; a sweep's name stands for its choice.
        self.sub_models = sub_models
        self.docs = docs
        #: Results and work dirs of the regime, below the study's.
        self.subdir = subdir
        #: How the training data is augmented, for the settings line.
        self.data = data
        #: dict(name, arch, variants, heldout=(first, num)): a ratio sweep
        #: of one sub-model, trained at the first seed, chosen on held-out
        #: training images, then trained at the other seeds.
        self.sweep = sweep
        self.claims = claims
        #: Measured time estimate of the whole regime (for the docs block
        #: of a regime that has no record yet).
        self.estimate = estimate

    def config_path(self, arch: str, variant: str) -> str:
        return osp.join(self.config_dir, self.config.format(
            model=ARCHS[arch][1], variant=self.variants[variant][1]))

    def sweep_variants(self, arch: str) -> Tuple[str, ...]:
        if self.sweep and arch == self.sweep['arch']:
            return tuple(self.sweep['variants'])
        return ()

    def heldout(self, variant: str, smoke: bool):
        """(first, num) of the held-out training images that score a sweep
        run, or None for the other runs."""
        if not self.sweep or variant not in self.sweep['variants']:
            return None
        return self.sweep['smoke_heldout' if smoke else 'heldout']


REGIMES = {
    'overfit': Regime(
        'overfit', 'over-fitting regime (2k images, 60 epochs, flips)',
        CONFIG_DIR, CONFIG, VARIANTS, COST, SUB_MODELS,
        (DOCS_BEGIN, DOCS_END)),
    'heavy': Regime(
        'heavy', 'heavy augmentation (12k images, 4 epochs, RandAugment, '
        'Mixup/CutMix)',
        osp.join(CONFIG_DIR, 'heavy'), '{model}_1xb64{variant}_fashion-mnist'
        '-heavy.py',
        {'baseline': ('baseline', ''),
         'augmask': ('+ AugMask 0.5', '-augmask'),
         'augdrop-r0.1': ('+ AugDrop 0.1', '-augdrop-r0.1'),
         'augdrop-r0.2': ('+ AugDrop 0.2', '-augdrop-r0.2'),
         'augdrop-r0.3': ('+ AugDrop 0.3', '-augdrop-r0.3'),
         'augpath': ('+ AugPath 0.5', '-augpath'),
         # ResNet only: AugMask whose sub pass leaves the BatchNorm running
         # statistics to the main pass (sub_bn_stats='frozen').
         'augmask-bnmain': ('+ AugMask 0.5, BN stats of the main pass',
                            '-augmask-bnmain')},
        {'baseline': 1.0, 'augmask': 1.7, 'augpath': 1.8,
         'augdrop-r0.1': 2.7, 'augdrop-r0.2': 2.7, 'augdrop-r0.3': 2.7,
         'augmask-bnmain': 1.7},
        SUB_MODELS,
        ('<!-- study-heavy:begin (written by tools/study/run_study.py '
         '--regime heavy) -->', '<!-- study-heavy:end -->'),
        subdir='heavy',
        data=' (RandAugment 2 ops m5 on grey-safe ops, flips, Mixup 0.8 / '
        'CutMix 1.0 in the data preprocessor, soft-target cross-entropy)',
        # The training images are the first 12k of the 60k; the held-out
        # ones the last 10k, which no run trains on.
        sweep=dict(name='augdrop', label='AugDrop', arch='vit',
                   variants=('augdrop-r0.1', 'augdrop-r0.2', 'augdrop-r0.3'),
                   # The smoke files' held-out images follow the
                   # training ones (smoke_data: the last 100 of the 60k).
                   heldout=(50000, 10000),
                   smoke_heldout=(SMOKE['num_train'], SMOKE['num_heldout'])),
        claims=(1, 2),
        estimate='26 runs: the first 23 took 69 minutes measured with '
        '`--jobs 2` on 2 free cores (2026-11-30), the 3 of augmask-bnmain '
        '20 CPU-minutes (2026-12-03); see the note in '
        '`configs/fashion_mnist/_base_/fashion-mnist-heavy.py`'),
}
DEFAULT_REGIME = 'overfit'
ALL_VARIANTS = list(dict.fromkeys(
    v for r in REGIMES.values() for v in r.variants))


def config_path(arch: str, variant: str,
                regime: Regime = REGIMES[DEFAULT_REGIME]) -> str:
    return regime.config_path(arch, variant)


# -- one run ------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _load_config(path: str):
    # Every seed of a config, and every call of look_up, starts from the
    # same file: mmengine reads ~85 metafiles for each `mmpretrain::` base
    # of it (0.3 s a load), so each process loads a config once.
    from mmengine.config import Config
    return Config.fromfile(path)


def smoke_data(data_root: str, out: str) -> str:
    """The smoke version's Fashion-MNIST files, written to ``out``: the
    first ``SMOKE['num_train']`` training images, then the last
    ``SMOKE['num_heldout']`` (a sweep's held-out images, as the whole
    study's are the last of the 60k), and the first ``SMOKE['num_test']``
    test images. MMPretrain's FashionMNIST parses every image of its files
    at each build, 1.5 s of the 60k training images in a smoke run of 4 s
    (cProfile, 2026-12-07). Returns ``out``, the runs' data root."""
    import numpy as np
    os.makedirs(out, exist_ok=True)
    train = list(range(SMOKE['num_train'])) + list(
        range(60000 - SMOKE['num_heldout'], 60000))
    keep = dict(train=train, t10k=list(range(SMOKE['num_test'])))
    for split, rows in keep.items():
        for kind, dims in (('images-idx3', 3), ('labels-idx1', 1)):
            name = f'{split}-{kind}-ubyte'
            with open(osp.join(data_root, name), 'rb') as f:
                raw = f.read()
            header = 4 + 4 * dims  # magic, then one int32 per dimension
            count = int.from_bytes(raw[4:8], 'big')
            items = np.frombuffer(raw, np.uint8, offset=header).reshape(
                count, -1)
            with open(osp.join(out, name), 'wb') as f:
                f.write(raw[:4] + len(rows).to_bytes(4, 'big') +
                        raw[8:header] + items[rows].tobytes())
    return out


def build_cfg(arch: str, variant: str, seed: int, work_root: str,
              data_root: str, smoke: bool, verbose: bool,
              regime: Regime = REGIMES[DEFAULT_REGIME]):
    """The run's config: the study config, with seed, data root and work
    dir set (and the smoke sizes with ``smoke``)."""
    cfg = copy.deepcopy(_load_config(regime.config_path(arch, variant)))
    cfg.randomness.seed = seed
    loaders = [cfg.train_dataloader, cfg.val_dataloader, cfg.test_dataloader]
    for loader in loaders:
        loader.dataset.data_root = data_root
    if smoke:
        epochs = SMOKE['epochs']
        cfg.train_dataloader.dataset.indices = SMOKE['num_train']
        cfg.train_dataloader.batch_size = SMOKE['batch_size']
        cfg.val_dataloader.dataset.indices = SMOKE['num_test']
        cfg.test_dataloader.dataset.indices = SMOKE['num_test']
        cfg.train_cfg.max_epochs = epochs
        cfg.train_cfg.val_interval = 1
        cfg.param_scheduler = [dict(
            type='CosineAnnealingLR', by_epoch=True, begin=0, end=epochs,
            eta_min=1e-5, convert_to_iter_based=True)]
    heldout = regime.heldout(variant, smoke)
    if heldout is not None:
        num_train = cfg.train_dataloader.dataset.indices
        if not isinstance(num_train, int) or num_train > heldout[0]:
            raise ValueError(
                f'{regime.config_path(arch, variant)}: the held-out images '
                f'start at {heldout[0]}, but the run trains on '
                f'{num_train!r}: they must not overlap.')
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


def fingerprint(cfg, data_root: str, heldout=None) -> str:
    """Hash of everything in the config that can change a result (not where
    the data or the work dir are), and of the held-out images that score a
    sweep run."""
    settings = cfg.to_dict()
    for key in ('work_dir', 'experiment_name', 'log_level'):
        settings.pop(key, None)
    settings = _drop_default_scope(settings, settings.get('default_scope'))
    text = json.dumps(settings, sort_keys=True, default=str).replace(
        json.dumps(data_root)[1:-1], '<data_root>')
    if heldout is not None:
        text += json.dumps(dict(heldout=list(heldout)))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def heldout_top1(runner, cfg, heldout) -> float:
    """Top-1 of the trained model on training-split images ``heldout`` =
    (first, num), which the run did not train on: the sweep's choice is
    made on them, not on the test set."""
    import torch
    first, num = heldout
    loader_cfg = copy.deepcopy(cfg.val_dataloader.to_dict())
    loader_cfg['dataset'].update(split='train', test_mode=False,
                                 indices=list(range(first, first + num)))
    loader = runner.build_dataloader(loader_cfg)
    evaluator = runner.build_evaluator(copy.deepcopy(cfg.val_evaluator))
    model = runner.model
    model.eval()
    with torch.no_grad():
        for data in loader:
            outputs = model.val_step(data)
            evaluator.process(data_samples=outputs, data_batch=data)
    return evaluator.evaluate(len(loader.dataset))['accuracy/top1']


def train_run(cfg, heldout=None) -> dict:
    """Train one config with mmengine's Runner; return its sizes, timing
    and per-epoch curves (and its top-1 on the ``heldout`` images)."""
    import torch
    from mmengine.runner import Runner
    runner = Runner.from_cfg(cfg)
    start, cpu_start = time.time(), time.process_time()
    runner.train()
    seconds, cpu_seconds = time.time() - start, time.process_time() - cpu_start
    out = dict(num_train=len(runner.train_loop.dataloader.dataset),
               num_test=len(runner.val_loop.dataloader.dataset),
               epochs=runner.train_loop.max_epochs,
               train_time_s=round(seconds, 1),
               cpu_time_s=round(cpu_seconds, 1),
               torch_threads=torch.get_num_threads(),
               curves=read_log(runner.log_dir))
    if heldout is not None:
        out.update(heldout_images=list(heldout),
                   heldout_top1=heldout_top1(runner, cfg, heldout))
    return out


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


def run_fingerprint(regime: Regime, key, cfg, opts: dict) -> str:
    return fingerprint(cfg, opts['data_root'],
                       regime.heldout(key[1], opts['smoke']))


def train_and_save(regime_name: str, arch: str, variant: str, seed: int,
                   opts: dict) -> dict:
    """Train one run and save its record (in a worker process)."""
    regime = REGIMES[regime_name]
    cfg = build_cfg(arch, variant, seed, opts['work_root'], opts['data_root'],
                    opts['smoke'], opts['verbose'], regime)
    record = dict(arch=arch, variant=variant, seed=seed,
                  config=osp.relpath(regime.config_path(arch, variant), REPO),
                  fingerprint=run_fingerprint(regime, (arch, variant, seed),
                                              cfg, opts),
                  **train_run(cfg, regime.heldout(variant, opts['smoke'])))
    record['top1'] = record['curves']['top1'][-1]
    save_run(osp.join(opts['out'], 'runs', run_name(arch, variant, seed)),
             record)
    return record


def stop_workers(pool: ProcessPoolExecutor) -> None:
    """Cancel the queued runs and stop the running ones now (the pool's own
    shutdown would let them train to the end; after a ``kill`` of the driver
    alone they would train on as orphans). A stopped run has no record and
    is trained again, from the start, by the next call."""
    processes = list((getattr(pool, '_processes', None) or {}).values())
    manager = getattr(pool, '_executor_manager_thread', None)
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.terminate()
    # The pool's own thread reaps the stopped workers and then ends: wait
    # for it before joining them (joining first races with its reaping).
    if manager is not None:
        manager.join(timeout=30)
    for process in processes:
        process.join(timeout=30)


def _exit_on_sigterm(signum, frame):
    # SystemExit unwinds through run_all, which stops the workers.
    raise SystemExit(128 + signum)


def _memoize_config_text() -> None:
    """Format each config text once in this process: mmengine's Runner
    formats its config with yapf 5 times per run (the log, the dumped
    config, the visualizer's copy, each checkpoint), ~0.55 CPU-s each for a
    heavy-regime config. yapf's FormatCode is a function of its arguments
    alone, so the memo changes no file the run writes."""
    from mmengine.config import config as mm_config
    if getattr(mm_config.FormatCode, '_study_memo', False):
        return
    format_code, memo = mm_config.FormatCode, {}

    @functools.wraps(format_code)
    def formatted(source, style_config=None, **kwargs):
        key = (source, json.dumps(style_config, sort_keys=True, default=str),
               json.dumps(kwargs, sort_keys=True, default=str))
        if key not in memo:
            if len(memo) >= 4:  # one run's config at a time
                memo.clear()
            memo[key] = format_code(source, style_config=style_config,
                                    **kwargs)
        return memo[key]

    formatted._study_memo = True
    mm_config.FormatCode = formatted


def _memoize_metafile_scan() -> None:
    """Read mmpretrain's metafiles once in this process: mmengine resolves
    each ``mmpretrain::`` base of a config by loading all of the package's
    metafiles (85 YAML files, ~0.3 s) before it falls back to the base
    folder, at every config load -- one per config in the driver and in
    each worker. The files do not change while the study runs: each answer
    (a metafile entry, or the ValueError that sends mmengine to the base
    folder) is kept, and given again as mmengine gave it."""
    from mmengine.config import utils
    scan = getattr(utils, '_get_cfg_metainfo', None)
    if scan is None or getattr(scan, '_study_memo', False):
        return  # another mmengine's lookup, or done already
    memo = {}

    @functools.wraps(scan)
    def memoized(package_path: str, cfg_path: str) -> dict:
        key = (package_path, cfg_path)
        if key not in memo:
            try:
                memo[key] = scan(package_path, cfg_path), None
            except ValueError as error:
                memo[key] = None, str(error)
        found, error = memo[key]
        if error is not None:
            raise ValueError(error)
        return copy.deepcopy(found)  # callers may change what they get

    memoized._study_memo = True
    utils._get_cfg_metainfo = memoized


def _memoize_fashion_mnist() -> None:
    """Parse each Fashion-MNIST file once in this process: mmpretrain's
    dataset turns all 60k (10k) images of a file into per-image arrays for
    every dataset it builds (2-3 per run, ~0.5 CPU-s each), then keeps the
    run's few. The runs of a worker get the same arrays, in fresh dicts;
    the datasets copy a sample before transforming it."""
    from mmpretrain.datasets import FashionMNIST
    from mmpretrain.datasets.utils import rm_suffix
    if getattr(FashionMNIST.load_data_list, '_study_memo', False):
        return
    load, memo = FashionMNIST.load_data_list, {}

    @functools.wraps(load)
    def load_data_list(self):
        root = self.data_prefix['root']
        files = [osp.join(root, rm_suffix(name)) for name, _ in
                 (self.test_list if self.test_mode else self.train_list)]
        # Keyed by the files' state too: a changed file is read again.
        key = (type(self), bool(self.test_mode), tuple(
            (f, os.stat(f).st_mtime_ns, os.stat(f).st_size)
            if osp.isfile(f) else (f, ) for f in files))
        if key not in memo:
            memo[key] = load(self)
            # Out of the garbage collector's scans: mmengine runs a full
            # collection after building each dataset, and the memo's 70k
            # dicts made each one ~0.3 s (what else lives now, the first
            # run's few MB, is never collected either).
            gc.freeze()
        return [dict(info) for info in memo[key]]

    load_data_list._study_memo = True
    FashionMNIST.load_data_list = load_data_list


def _init_worker(threads: int) -> None:
    import torch
    torch.set_num_threads(threads)
    _memoize_config_text()
    _memoize_metafile_scan()
    _memoize_fashion_mnist()
    import augsub_mm  # noqa: F401  (registers AugSub)
    import masked_main  # noqa: F401  (registers MaskedMainClassifier)


# -- the grid -----------------------------------------------------------
def choose(regime: Regime, arch: str, records: dict,
           seed: int) -> Optional[str]:
    """The sweep's choice for ``arch``: the ratio whose run at ``seed`` has
    the best top-1 on the held-out training images (ties: the smaller
    ratio); None until every ratio has that run. Fixed before any run."""
    names = regime.sweep_variants(arch)
    runs = [records.get((arch, v, seed)) for v in names]
    if not names or any(r is None for r in runs):
        return None
    best = max(range(len(names)),
               key=lambda i: (runs[i]['heldout_top1'], -i))
    return names[best]


def plan(regime: Regime, archs, variants, seeds, records: dict) -> list:
    """The runs of the grid, given the records so far: every (arch, variant,
    seed) with a config; a sweep's ratios at the smallest seed only, and
    its choice (once made) at every seed."""
    keys, first = [], min(seeds)
    for a in archs:
        sweep = regime.sweep_variants(a)
        for v in variants:
            if not osp.isfile(regime.config_path(a, v)):
                continue
            if v in sweep:
                if set(sweep) <= set(variants) and \
                        choose(regime, a, records, first) == v:
                    keys += [(a, v, s) for s in seeds]
                else:
                    keys.append((a, v, first))
            else:
                keys += [(a, v, s) for s in seeds]
    return keys


def run_all(archs, variants, seeds, jobs: int, train: bool = True,
            regime: Regime = REGIMES[DEFAULT_REGIME],
            **opts) -> List[dict]:
    """Train every run of the grid that has no up-to-date record, ``jobs``
    at a time; return the records of the whole grid, in grid order. With
    ``train=False`` nothing is trained: runs without a record are left out
    (and said so). A sweep's choice is trained once its ratios are."""
    os.makedirs(osp.join(opts['out'], 'runs'), exist_ok=True)
    records, missing = {}, set()

    def look_up(keys):
        """Load the records of ``keys`` not looked up yet; return those
        that have none."""
        todo = []
        for key in keys:
            if key in records or key in missing:
                continue
            cfg = build_cfg(*key, opts['work_root'], opts['data_root'],
                            opts['smoke'], opts['verbose'], regime)
            record = load_run(osp.join(opts['out'], 'runs', run_name(*key)),
                              run_fingerprint(regime, key, cfg, opts))
            if record is None:
                missing.add(key)
                todo.append(key)
            else:
                records[key] = record
                if not opts.get('quiet'):
                    print(f'{run_name(*key)}: top-1 {record["top1"]:.2f} '
                          '(done before, skipped)', flush=True)
        return todo

    todo = look_up(plan(regime, archs, variants, seeds, records))
    # A choice made from records just loaded adds runs to look up.
    while True:
        more = look_up(plan(regime, archs, variants, seeds, records))
        if not more:
            break
        todo += more
    if not train:
        if not records:
            return []
        for key in todo:
            if not opts.get('quiet'):
                print(f'{run_name(*key)}: no record, left out (--no-train)',
                      flush=True)
        grid = plan(regime, archs, variants, seeds, records)
        return [records[key] for key in grid if key in records]
    # Tiny models use threads poorly: one thread per run, runs in parallel.
    threads = max(1, (os.cpu_count() or 1) // jobs)
    start, done, total = time.time(), 0, len(todo)
    with ProcessPoolExecutor(
            jobs, mp_context=get_context('spawn'), initializer=_init_worker,
            initargs=(threads, )) as pool:
        futures = {}

        def submit(keys):
            for key in sorted(keys, key=lambda k: -regime.cost[k[1]]):
                futures[pool.submit(train_and_save, regime.name, *key,
                                    opts)] = key

        submit(todo)
        try:
            while futures:
                finished, _ = wait(futures, return_when=FIRST_COMPLETED)
                for future in finished:
                    key, record = futures.pop(future), future.result()
                    records[key] = record
                    missing.discard(key)
                    done += 1
                    elapsed = time.time() - start
                    print(f'[{done}/{total}] {run_name(*key)}: top-1 '
                          f'{record["top1"]:.2f}, '
                          f'{record["train_time_s"]:.0f} s; '
                          f'{elapsed / 60:.0f} min so far, ~'
                          f'{elapsed / done * (total - done) / 60:.0f} min '
                          'left', flush=True)
                # A sweep's choice, once made, adds runs.
                fresh = look_up(plan(regime, archs, variants, seeds,
                                     records))
                total += len(fresh)
                submit(fresh)
        except BaseException:
            stop_workers(pool)
            raise
    return [records[key] for key in plan(regime, archs, variants, seeds,
                                         records)]


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


def summarize(records: List[dict],
              regime: Regime = REGIMES[DEFAULT_REGIME]) -> Dict[str, str]:
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
        for variant in regime.variants:
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
                f'| {ARCHS[arch][0]} | {regime.variants[variant][0]} | '
                f'{fmt(m, s)} | {delta} | {len(runs)} | {fmt(lm, ls, 3)} | '
                f'{minutes:.1f} |')
            rows.append(dict(arch=arch, variant=variant, seeds=len(runs),
                             top1_mean=round(m, 3),
                             top1_std=round(s, 3), delta=delta,
                             final_loss_mean=round(lm, 4),
                             cpu_minutes_per_run=round(minutes, 2)))
    results = claim_results(by_arch, regime)
    return dict(table='\n'.join(table), sweep=sweep_table(by_arch, regime),
                claims=claims_text(results, regime), results=results,
                csv=rows)


def sweep_choice(v: Dict[str, List[dict]], regime: Regime,
                 arch: str) -> Optional[str]:
    """The sweep's choice from the records of one model (None: not made)."""
    names = regime.sweep_variants(arch)
    if not names:
        return None
    seed = min((r['seed'] for n in names for r in v.get(n, [])), default=0)
    first = {(arch, n, seed): r for n in names for r in v.get(n, [])
             if r['seed'] == seed}
    return choose(regime, arch, first, seed)


def sweep_table(by_arch, regime: Regime) -> str:
    """Every ratio of the sweep: its held-out and test top-1."""
    if not regime.sweep:
        return ''
    sweep, arch = regime.sweep, regime.sweep['arch']
    v = by_arch.get(arch, {})
    names = [n for n in sweep['variants'] if n in v]
    if not names:
        return ''
    chosen = sweep_choice(v, regime, arch)
    seed = min(r['seed'] for n in names for r in v[n])
    base = v.get('baseline')
    bm = mean_std([r['top1'] for r in base])[0] if base else None
    first, num = next((r['heldout_images'] for n in names for r in v[n]
                       if 'heldout_images' in r), sweep['heldout'])
    lines = [
        f"**{sweep['label']} ratio sweep ({ARCHS[arch][0]})**: every ratio "
        f'is trained at seed {seed} and scored on held-out training images '
        '(not trained on, not the test set: images '
        f'{first}-{first + num - 1} of the training split); the best '
        'held-out top-1 is chosen (ties: the '
        'smaller ratio) and trained at the other seeds. Every ratio is '
        'shown.', '',
        f'| ratio | held-out top-1, seed {seed} | test top-1, seed {seed} '
        '| test top-1 (mean ± std) | seeds | Δ vs baseline | |',
        '|---|---|---|---|---|---|---|']
    for n in names:
        at_seed = [r for r in v[n] if r['seed'] == seed]
        m, s = mean_std([r['top1'] for r in v[n]])
        lines.append(
            f"| {regime.variants[n][0].lstrip('+ ')} | "
            + (f"{at_seed[0]['heldout_top1']:.2f} | "
               f"{at_seed[0]['top1']:.2f}" if at_seed else ' | ')
            + f' | {fmt(m, s)} | {len(v[n])} | '
            + ('' if bm is None else f'{m - bm:+.2f}')
            + f" | {'**chosen**' if n == chosen else ''} |")
    if chosen is None:
        lines += ['', 'Not chosen yet: a ratio has no run at seed '
                  f'{seed}.']
    return '\n'.join(lines)


def claim_results(by_arch, regime: Regime) -> List[dict]:
    """Each claim answered yes / no / n/a from the numbers, one dict per
    line: claim, arch, sub (claim 1's sub-model), yes (True / False /
    None for n/a), short (for the side-by-side table) and line (for the
    regime's claims). The criteria were set before any run (see the
    README's Results); they are the same in every regime."""
    out = []
    for arch, v in by_arch.items():
        name = ARCHS[arch][0]
        if 'baseline' not in v:
            continue
        bm, bs = mean_std([r['top1'] for r in v['baseline']])
        for sub in regime.sub_models:
            variant, note = sub, ''
            if regime.sweep and sub == regime.sweep['name']:
                variant = sweep_choice(v, regime, arch)
                note = ' (the sweep\'s choice)'
            if (arch, sub) in NOT_APPLICABLE:
                label = regime.variants[sub][0] if sub in regime.variants \
                    else f"+ {regime.sweep['label']}"
                out.append(dict(
                    claim=1, arch=arch, sub=sub, yes=None,
                    short='n/a (no dropout layers)',
                    line=f'- {name}, {label}: n/a -- '
                    f'{NOT_APPLICABLE[arch, sub]}.'))
            if variant is None or variant not in v:
                continue
            m, s = mean_std([r['top1'] for r in v[variant]])
            noise = math.hypot(bs, s)
            beyond = '' if math.isnan(noise) else (
                f"; {'beyond' if abs(m - bm) > noise else 'within'} one "
                f'combined std ({noise:.2f})')
            label = regime.variants[variant][0]
            short = f'{m - bm:+.2f}'
            if not math.isnan(noise):
                short += (', beyond' if abs(m - bm) > noise else
                          ', within') + ' the noise'
            if sub == 'augdrop':
                # The ratio differs between regimes: name it.
                short = f"{label.lstrip('+ ')}{note}: {short}"
            out.append(dict(
                claim=1, arch=arch, sub=sub, yes=m > bm,
                short=f'{answer(m > bm)} ({short})',
                line=f'- {name}, {label}{note}: {answer(m > bm)} -- '
                f'{fmt(m, s)} vs {fmt(bm, bs)} ({m - bm:+.2f}{beyond}).'))
        if 'augmask' in v:
            base, sub = mean_curves(v['baseline']), mean_curves(v['augmask'])
            points = [(f, loss_at(base, f), loss_at(sub, f))
                      for f in LOSS_POINTS]
            text = ', '.join(
                f'{f:.0%} of training: {s:.3f} vs {b:.3f}'
                for f, b, s in points)
            yes = all(s < b for _, b, s in points)
            lower = sum(s < b for _, b, s in points)
            out.append(dict(
                claim=2, arch=arch, sub=None, yes=yes,
                short=f'{answer(yes)} (lower at {lower} of '
                f'{len(points)} checkpoints)',
                line=f'- {name}: {answer(yes)} -- main loss with AugMask vs '
                f'baseline at {text}.'))
        if 'masked-r0.75' in v and 'augmask-r0.75' in v:
            mm, ms = mean_std([r['top1'] for r in v['masked-r0.75']])
            am, as_ = mean_std([r['top1'] for r in v['augmask-r0.75']])
            yes = mm < bm and am >= bm
            out.append(dict(
                claim=3, arch=arch, sub=None, yes=yes,
                short=f'{answer(yes)} (masked training {mm - bm:+.2f}, '
                f'AugMask 0.75 {am - bm:+.2f})',
                line=f'- {name}: {answer(yes)} -- masked '
                f'training 0.75: {fmt(mm, ms)} ({mm - bm:+.2f}, '
                f"{'hurts' if mm < bm else 'does not hurt'}); AugMask 0.75 "
                f'in the sub-model: {fmt(am, as_)} ({am - bm:+.2f}, '
                f"{'hurts' if am < bm else 'does not hurt'}); baseline "
                f'{fmt(bm, bs)}.'))
    return out


CLAIMS = {
    1: '**(1) Each sub-model improves top-1 over the baseline** (yes: the '
    'mean over seeds is higher).',
    2: '**(2) The main branch\'s training loss converges faster with '
    'AugMask** (yes: the seed-mean main training loss is lower than the '
    'baseline\'s at each of 25/50/75/100% of the epochs).',
    3: '**(3) Masking 0.75 in the main recipe hurts, the same ratio in the '
    'sub-model does not** (yes: masked training is below the baseline '
    'mean and AugMask 0.75 is not).',
}
#: Short names of the claims, for the side-by-side table.
CLAIM_ROWS = [
    (1, 'augmask', '(1) AugMask improves top-1'),
    (1, 'augdrop', '(1) AugDrop improves top-1'),
    (1, 'augpath', '(1) AugPath improves top-1'),
    (2, None, '(2) main training loss converges faster with AugMask'),
    (3, None, '(3) masking 0.75 hurts in the recipe, not in the sub-model'),
]


def claims_text(results: List[dict], regime: Regime) -> str:
    not_run = ['- not run.']
    parts = []
    for claim in regime.claims:
        lines = [r['line'] for r in results if r['claim'] == claim]
        parts += [CLAIMS[claim], *(lines or not_run), '']
    return '\n'.join(parts[:-1])


def claims(by_arch, regime: Regime = REGIMES[DEFAULT_REGIME]) -> str:
    """Each claim answered yes / no from the numbers; the criteria were set
    before any run (see the README's Results)."""
    return claims_text(claim_results(by_arch, regime), regime)


def variant_color(variant: str,
                  regime: Regime = REGIMES[DEFAULT_REGIME]) -> str:
    """One colour per variant, the same in every plot of the regime."""
    return f'C{list(regime.variants).index(variant)}'


def plot_top1(by_arch, out: str,
              regime: Regime = REGIMES[DEFAULT_REGIME]) -> str:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(by_arch), figsize=(6 * len(by_arch), 4),
                             squeeze=False)
    for ax, (arch, v) in zip(axes[0], by_arch.items()):
        names = [n for n in regime.variants if n in v]
        stats = [mean_std([r['top1'] for r in v[n]]) for n in names]
        means = [m for m, _ in stats]
        errs = [0 if math.isnan(s) else s for _, s in stats]
        ax.bar(range(len(names)), means, yerr=errs, capsize=4,
               color=[variant_color(n, regime) for n in names])
        if 'baseline' in v:
            ax.axhline(means[0], color='k', linewidth=0.8, linestyle=':')
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(
            [regime.variants[n][0].lstrip('+ ') + (
                f' ({len(v[n])} seed)' if len(v[n]) == 1 else '')
             for n in names], rotation=30, ha='right', fontsize=8)
        low = min(m - e for m, e in zip(means, errs))
        high = max(m + e for m, e in zip(means, errs))
        pad = max(0.5, (high - low) * 0.3)
        ax.set_ylim(low - pad, high + pad)
        title = ARCHS[arch][0]
        if regime.name != DEFAULT_REGIME:
            title += f', {regime.name}'
        ax.set(ylabel='top-1 % on the 10k test set (mean ± std)',
               title=title)
        ax.grid(axis='y', alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def write_summary(records: List[dict], out: str, docs: Optional[str],
                  command: str,
                  regime: Regime = REGIMES[DEFAULT_REGIME]) -> str:
    """Write summary.csv, summary.md and the plots; refresh the regime's
    block of ``docs``. Returns the markdown."""
    summary = summarize(records, regime)
    with open(osp.join(out, 'summary.csv'), 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=list(summary['csv'][0]))
        writer.writeheader()
        writer.writerows(summary['csv'])
    by_arch = group(records)
    plots = [plot_top1(by_arch, osp.join(out, 'top1.png'), regime)]
    where = 'Fashion-MNIST' if regime.name == DEFAULT_REGIME else \
        f'Fashion-MNIST, {regime.title}'
    for arch, v in by_arch.items():
        # A sweep's ratios other than its choice have one seed: only the
        # choice goes into the curves (all ratios are in top1.png).
        chosen = sweep_choice(v, regime, arch)
        names = [n for n in regime.variants if n in v and (
            n not in regime.sweep_variants(arch) or n == chosen)]
        plots.append(plot_runs(
            [(regime.variants[n][0], mean_curves(v[n])) for n in names],
            osp.join(out, f'loss_curves_{arch}.png'),
            f'{ARCHS[arch][0]} on {where} (mean over seeds)',
            log_loss=True, colors=[variant_color(n, regime) for n in names]))
    first = records[0]
    cpu_minutes = sum(r['cpu_time_s'] for r in records) / 60
    settings = (f"{first['num_train']} training images{regime.data}, "
                f"{first['epochs']} "
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
            *([summary['sweep']] if summary['sweep'] else []),
            summary['claims'], images]) + '\n'

    text = markdown('')
    title = 'Fashion-MNIST study' if regime.name == DEFAULT_REGIME else \
        f'Fashion-MNIST study, {regime.title}'
    with open(osp.join(out, 'summary.md'), 'w') as f:
        f.write(f'# {title}: summary\n\n' + text)
    if docs:
        # Image links relative to the markdown file that shows them.
        prefix = osp.relpath(out, osp.dirname(osp.abspath(docs))).replace(
            os.sep, '/') + '/'
        update_docs(docs, markdown(prefix), regime.docs)
    return text


def not_trained_text(regime: Regime, out: str, command: str) -> str:
    runs = osp.relpath(osp.join(out, 'runs'), REPO).replace(os.sep, '/')
    return (f'**Not trained yet**: no record in `{runs}`. `{command}` trains '
            f'it ({regime.estimate}) and writes its settings, table, claims '
            'and plots here.\n') if regime.estimate else \
        f'**Not trained yet**: no record in `{runs}`. `{command}` trains it.\n'


def both_text(results: Dict[str, Optional[List[dict]]]) -> str:
    """The claims of every regime side by side: ``results`` maps a regime
    name to its claim_results (None: not trained yet)."""
    names = list(results)
    lines = ['| claim | model | ' + ' | '.join(
        REGIMES[n].title for n in names) + ' |',
        '|---|---|' + '---|' * len(names)]
    for claim, sub, label in CLAIM_ROWS:
        for arch in ARCHS:
            cells = []
            for n in names:
                regime = REGIMES[n]
                if results[n] is None:
                    cells.append('not trained yet')
                    continue
                if claim not in regime.claims:
                    cells.append('not tested in this regime')
                    continue
                found = [r for r in results[n] if r['claim'] == claim
                         and r['arch'] == arch and r['sub'] == sub]
                cells.append(found[0]['short'] if found else 'not run')
            if all(c == 'not run' for c in cells):
                continue
            lines.append(f'| {label} | {ARCHS[arch][0].split()[0]} | '
                         + ' | '.join(cells) + ' |')
    return '\n'.join(lines) + '\n'


def update_docs(path: str, block: str,
                markers: Tuple[str, str] = (DOCS_BEGIN, DOCS_END),
                required: bool = True) -> None:
    """Replace the text between the ``markers`` of ``path``."""
    begin, end = markers
    with open(path) as f:
        text = f.read()
    pattern = re.compile(re.escape(begin) + '.*?' + re.escape(end), re.S)
    if not pattern.search(text):
        if not required:
            return
        raise ValueError(f'{path} has no {begin} ... {end} block '
                         'to write the results into; add one, or pass '
                         '--docs "".')
    new = pattern.sub(lambda _: f'{begin}\n{block}{end}', text)
    if new != text:
        with open(path, 'w') as f:
            f.write(new)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Train the Fashion-MNIST study (baseline vs AugMask, '
        'AugDrop, AugPath; masked training) and answer the paper\'s claims.')
    parser.add_argument(
        '--regime', choices=list(REGIMES),
        help='overfit: 2k images, 60 epochs, flips (the default when '
        'training); heavy: 12k images, 4 epochs, RandAugment, Mixup/CutMix, '
        'soft targets, and an AugDrop ratio sweep. With --no-train and no '
        '--regime: every regime')
    parser.add_argument('--smoke', action='store_true',
                        help=f'tiny version of the same study: '
                        f'{SMOKE}; writes under work_dirs/ unless --out')
    parser.add_argument('--archs', nargs='+', choices=list(ARCHS),
                        default=list(ARCHS))
    parser.add_argument('--variants', nargs='+', choices=ALL_VARIANTS,
                        help='default: every variant of the regime')
    parser.add_argument('--seeds', nargs='+', type=int,
                        help=f'default: {list(SEEDS)} ({list(SMOKE["seeds"])}'
                        ' with --smoke)')
    parser.add_argument('--out', help='results folder (default: '
                        'results/fashion_mnist; work_dirs/fashion_mnist_'
                        'smoke/results with --smoke); the heavy regime '
                        'writes into its heavy/ folder')
    parser.add_argument('--work-dir', help='where the runs\' work dirs go '
                        '(default: work_dirs/fashion_mnist_study[_smoke]; '
                        'its heavy/ folder for the heavy regime)')
    parser.add_argument(
        '--data-root', default=os.environ.get(
            'FMNIST_ROOT', osp.join(REPO, 'data', 'fashion_mnist')),
        help='Fashion-MNIST folder (default: $FMNIST_ROOT, else '
        'data/fashion_mnist); made from Debian\'s dataset-fashion-mnist if '
        'missing')
    parser.add_argument('--docs', help='markdown file whose study blocks '
                        'get the summary (default: docs/study.md for a '
                        'whole regime in results/fashion_mnist, none for a '
                        'piece of it or --smoke; "" for none); a '
                        'docs/study.md also updates the side-by-side block '
                        'of the README.md next to its docs folder')
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


def regime_variants(args, regime: Regime) -> List[str]:
    if args.variants is None:
        return list(regime.variants)
    return [v for v in args.variants if v in regime.variants]


def docs_target(args, seeds,
                regime: Regime = REGIMES[DEFAULT_REGIME]) -> Optional[str]:
    """The markdown file whose study blocks get the summary: ``--docs`` if
    given, else docs/study.md for a whole regime in results/fashion_mnist.
    The docs show whole regimes: a piece of one (some models, variants
    or seeds), the smoke version or another results folder leave them
    alone.
    """
    if args.docs is not None:
        return args.docs or None
    whole = (not args.smoke and args.out is None
             and set(args.archs) == set(ARCHS)
             and set(regime_variants(args, regime)) == set(regime.variants)
             and set(seeds) == set(SEEDS))
    return osp.join(REPO, 'docs', 'study.md') if whole else None


def both_targets(docs_files) -> List[str]:
    """The markdown files whose side-by-side block (where they have one)
    gets both regimes' claims: each file that got a regime's block and,
    for a ``docs/study.md``, the README.md next to its ``docs`` folder --
    the README shows the regimes side by side, docs/study.md each one."""
    targets = set(docs_files)
    for docs in docs_files:
        folder = osp.dirname(osp.abspath(docs))
        readme = osp.join(osp.dirname(folder), 'README.md')
        if (osp.basename(docs) == 'study.md'
                and osp.basename(folder) == 'docs' and osp.isfile(readme)):
            targets.add(readme)
    return sorted(targets)


def regime_command(given: List[str], regime: Regime, jobs: int,
                   complete: bool) -> str:
    """The command shown with a regime's summary: the one that trains it
    (without --no-train) when nothing was left out, else the one given;
    always naming the regime when it is not the default, and --jobs."""
    args, skip = [], 0
    for i, a in enumerate(given):
        if skip:
            skip -= 1
            continue
        if a == '--regime':
            skip = 1
            continue
        if a.startswith('--regime=') or (complete and a == '--no-train'):
            continue
        args.append(a)
    if regime.name != DEFAULT_REGIME:
        args = ['--regime', regime.name] + args
    if not any(a == '--jobs' or a.startswith('--jobs=') for a in args):
        args += ['--jobs', str(jobs)]
    return shlex.join(['python', 'tools/study/run_study.py', *args])


def main(argv=None):
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    _memoize_metafile_scan()  # the driver loads every config of the grid
    if args.regime:
        names = [args.regime]
    else:
        names = list(REGIMES) if args.no_train else [DEFAULT_REGIME]
    suffix = '_smoke' if args.smoke else ''
    out_root = args.out or osp.join(
        REPO, *(('work_dirs', 'fashion_mnist_smoke', 'results')
                if args.smoke else ('results', 'fashion_mnist')))
    work_root = args.work_dir or osp.join(REPO, 'work_dirs',
                                          'fashion_mnist_study' + suffix)
    seeds = args.seeds or (SMOKE['seeds'] if args.smoke else SEEDS)
    given = list(sys.argv[1:] if argv is None else argv)

    from augsub_mm.utils import prepare_fashion_mnist
    prepare_fashion_mnist(args.data_root)
    data_root = smoke_data(args.data_root, osp.join(work_root, 'data')) \
        if args.smoke else args.data_root

    def collect(regime: Regime, train: bool, quiet: bool = False):
        out = osp.join(out_root, regime.subdir)
        return out, run_all(
            args.archs, regime_variants(args, regime), seeds, args.jobs,
            train=train, regime=regime, out=out,
            work_root=osp.join(work_root, regime.subdir),
            data_root=data_root, smoke=args.smoke,
            verbose=args.verbose, quiet=quiet)

    summarized, docs_files = {}, set()
    for name in names:
        regime = REGIMES[name]
        if not regime_variants(args, regime):
            continue
        docs = docs_target(args, seeds, regime)
        out, records = collect(regime, not args.no_train)
        grid = plan(regime, args.archs, regime_variants(args, regime),
                    seeds, {(r['arch'], r['variant'], r['seed']): r
                            for r in records})
        complete = len(records) == len(grid) and (
            not regime.sweep or all(
                sweep_choice(group(records).get(a, {}), regime, a)
                for a in args.archs if regime.sweep_variants(a)
                and set(regime.sweep_variants(a)) <= set(
                    regime_variants(args, regime))))
        command = regime_command(given, regime, args.jobs, complete)
        if not records:
            # Nothing to summarize: say so, and where the docs show it.
            train_cmd = regime_command(given, regime, args.jobs, True)
            print(f'{name} regime: not trained yet (no record in '
                  f'{out}/runs); `{train_cmd}` trains it.', flush=True)
            if docs:
                update_docs(docs, not_trained_text(regime, out, train_cmd),
                            regime.docs)
                docs_files.add(docs)
            continue
        text = write_summary(records, out, docs, command, regime)
        if docs:
            docs_files.add(docs)
        summarized[name] = records
        print(text)
        print(f'Results in {out}')
    if not summarized and not docs_files:
        raise SystemExit(f'No run of this grid has a record in {out_root}: '
                         'nothing to summarize (drop --no-train to train).')
    # The regimes side by side, in each docs file that has the block: from
    # the records of every regime in the same results folder.
    for docs in both_targets(docs_files):
        results = {}
        for name, regime in REGIMES.items():
            if name in summarized:
                records = summarized[name]
            else:
                records = collect(regime, False, quiet=True)[1]
            results[name] = claim_results(group(records), regime) \
                if records else None
        update_docs(docs, both_text(results), (BOTH_BEGIN, BOTH_END),
                    required=False)


if __name__ == '__main__':
    main()
