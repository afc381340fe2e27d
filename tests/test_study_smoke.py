"""The Fashion-MNIST study end to end, at smoke size: every config of
configs/fashion_mnist (both regimes) trained by mmengine's Runner on real
Fashion-MNIST (Debian's dataset-fashion-mnist), per-run records, the
summaries with the claims answered, the heavy regime's AugDrop sweep and
its choice on held-out images, the plots, the docs blocks (each regime's
and the side-by-side one), and resuming without retraining.

The two smoke studies took 161 s and 134 s in one process on 2 cores shared
with another job (2026-12-03)."""
import csv
import glob
import json
import os
import os.path as osp
import re
import signal
import subprocess
import sys

import pytest

from conftest import REPO

ARCHS = ('vit', 'resnet')
RUNS = 11  # 6 ViT configs, 5 ResNet configs (no dropout layers: no AugDrop)
SEEDS = 2


def study(out, work_dir, *extra):
    return subprocess.run(
        [sys.executable, 'tools/study/run_study.py', '--smoke', '--out', out,
         '--work-dir', work_dir, '--jobs', '2', *extra],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, timeout=900)


def study_here(out, work_dir, *extra) -> str:
    """The driver's ``main`` in this process, for an invocation that trains
    nothing (every run done before, or --no-train): what it printed. A
    subprocess would cost an interpreter and the OpenMMLab imports each;
    the first invocation of a test, which trains, runs as users run it."""
    import contextlib
    import io
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        load_driver().main(['--smoke', '--out', out, '--work-dir', work_dir,
                            '--jobs', '2', *extra])
    return printed.getvalue()


def test_smoke_study(tmp_path):
    out, work_dir = str(tmp_path / 'results'), str(tmp_path / 'work_dirs')
    proc = study(out, work_dir)
    assert proc.returncode == 0, proc.stdout[-3000:]

    records = []
    for path in sorted(glob.glob(osp.join(out, 'runs', '*.json'))):
        with open(path) as f:
            records.append(json.load(f))
        assert osp.isfile(path[:-5] + '.csv')
    assert len(records) == RUNS * SEEDS
    for r in records:
        assert r['num_train'] == 64 and r['num_test'] == 50
        assert r['epochs'] == 2 and r['curves']['epoch'] == [1, 2]
        assert r['curves']['val_epoch'] == [1, 2]
        assert 0 <= r['top1'] <= 100 and r['top1'] == r['curves']['top1'][-1]
        assert all(loss > 0 for loss in r['curves']['loss'])
        has_sub = r['variant'] not in ('baseline', 'masked-r0.75')
        assert bool(r['curves']['loss_sub']) == has_sub, r['variant']
        assert r['torch_threads'] >= 1
    assert len({(r['arch'], r['variant'], r['seed']) for r in records}) \
        == RUNS * SEEDS

    with open(osp.join(out, 'summary.csv')) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == RUNS
    assert {r['seeds'] for r in rows} == {str(SEEDS)}
    assert not any(r['arch'] == 'resnet' and r['variant'] == 'augdrop'
                   for r in rows)

    summary = open(osp.join(out, 'summary.md')).read()
    for claim in ('(1)', '(2)', '(3)'):
        assert f'**{claim}' in summary
    answers = re.findall(r'^- (.+?): \*\*(yes|no)\*\* -- ', summary, re.M)
    # (1): 3 ViT + 2 ResNet sub-models; (2) and (3): one line per model.
    assert len(answers) == 5 + 2 + 2
    assert '± ' in summary  # two seeds: a std
    cpu_minutes = sum(r['cpu_time_s'] for r in records) / 60
    assert f'training took {cpu_minutes:.0f} CPU-minutes over {RUNS * SEEDS}' \
        f' runs' in summary
    for name in ('top1.png', 'loss_curves_vit.png', 'loss_curves_resnet.png'):
        import matplotlib.image as mpimg
        image = mpimg.imread(osp.join(out, name))
        assert image[..., :3].std() > 0.05, name

    # Resume: nothing is trained again, the summary is the same.
    again = study_here(out, work_dir)
    assert again.count('done before, skipped') == RUNS * SEEDS
    assert open(osp.join(out, 'summary.md')).read() == summary

    # --no-train over a complete grid: the same summary, and the command it
    # shows is the one that trains (without --no-train).
    study_here(out, work_dir, '--no-train')
    assert open(osp.join(out, 'summary.md')).read() == summary
    # Over an incomplete grid (seed 2 never trained) it says so, and keeps
    # --no-train in the command.
    partial = study_here(out, work_dir, '--no-train', '--seeds', '0', '1',
                         '2')
    assert partial.count('no record, left out') == RUNS
    assert '--no-train' in open(osp.join(out, 'summary.md')).read()


def load_driver():
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        'run_study', osp.join(REPO, 'tools', 'study', 'run_study.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_only_the_whole_study_rewrites_the_docs(tmp_path):
    driver = load_driver()
    study = osp.join(REPO, 'docs', 'study.md')
    readme = osp.join(REPO, 'README.md')

    def target(*argv):
        args = driver.parse_args(list(argv))
        seeds = args.seeds or (driver.SMOKE['seeds'] if args.smoke
                               else driver.SEEDS)
        return driver.docs_target(args, seeds)

    assert target() == study
    assert target('--seeds', '2', '1', '0', '--jobs', '1') == study
    # Pieces of the study, the smoke version, another results folder.
    assert target('--archs', 'resnet') is None
    assert target('--variants', 'baseline', 'augmask') is None
    assert target('--seeds', '0') is None
    assert target('--smoke') is None
    assert target('--out', '/tmp/elsewhere') is None
    # --docs decides when given.
    assert target('--archs', 'vit', '--docs', 'notes.md') == 'notes.md'
    assert target('--docs', '') is None

    def heavy(*argv):
        args = driver.parse_args(['--regime', 'heavy', *argv])
        return driver.docs_target(args, args.seeds or driver.SEEDS,
                                  driver.REGIMES['heavy'])

    assert heavy() == study
    assert heavy('--variants', 'baseline', 'augmask') is None
    assert heavy('--archs', 'vit') is None
    assert heavy('--smoke') is None

    # The side-by-side block: the regimes' file and, for a docs/study.md,
    # the README next to its docs folder (only where that README exists).
    assert driver.both_targets({study}) == sorted([study, readme])
    assert driver.both_targets({'notes.md'}) == ['notes.md']
    lone = str(tmp_path / 'docs' / 'study.md')
    assert driver.both_targets({lone}) == [lone]
    (tmp_path / 'README.md').write_text('')
    assert driver.both_targets({lone}) == sorted(
        [lone, str(tmp_path / 'README.md')])
    other = str(tmp_path / 'notes' / 'study.md')
    assert driver.both_targets({other}) == [other]


def test_heavy_regime_configs_inherit_and_are_disjoint():
    """The heavy configs are the study's models plus the regime's base;
    the held-out images of the sweep are not trained on."""
    from mmengine.config import Config
    driver = load_driver()
    heavy, overfit = driver.REGIMES['heavy'], driver.REGIMES['overfit']
    for arch in ARCHS:
        cfg = Config.fromfile(heavy.config_path(arch, 'baseline'))
        plain = Config.fromfile(overfit.config_path(arch, 'baseline'))
        assert cfg.model.backbone == plain.model.backbone
        assert [a['type'] for a in cfg.model.train_cfg.augments] == \
            ['Mixup', 'CutMix']
        assert cfg.model.head.loss.use_soft
        assert 'RandAugment' in [t['type'] for t in
                                 cfg.train_dataloader.dataset.pipeline]
        num_train = cfg.train_dataloader.dataset.indices
        assert num_train > plain.train_dataloader.dataset.indices
        assert num_train <= heavy.sweep['heldout'][0]
    ratios = [Config.fromfile(heavy.config_path('vit', v)).model.augsub
              for v in heavy.sweep['variants']]
    assert [(r['type'], r['ratio']) for r in ratios] == [
        ('AugDrop', 0.1), ('AugDrop', 0.2), ('AugDrop', 0.3)]


# ViT: 3 variants x 2 seeds, sweep, its choice; ResNet: 4 variants x 2 seeds
HEAVY_RUNS = 6 + 3 + 1 + 8
DOCS = '\n\n'.join(
    f'{begin}\nold\n{end}' for begin, end in (
        ('<!-- study:begin (written by tools/study/run_study.py) -->',
         '<!-- study:end -->'),
        ('<!-- study-heavy:begin (written by tools/study/run_study.py '
         '--regime heavy) -->', '<!-- study-heavy:end -->'),
        ('<!-- study-both:begin (written by tools/study/run_study.py) -->',
         '<!-- study-both:end -->'))) + '\n'


def test_smoke_study_heavy(tmp_path):
    out, work_dir = str(tmp_path / 'results'), str(tmp_path / 'work_dirs')
    docs = tmp_path / 'docs.md'
    docs.write_text(DOCS)
    proc = study(out, work_dir, '--regime', 'heavy', '--docs', str(docs))
    assert proc.returncode == 0, proc.stdout[-3000:]
    heavy = osp.join(out, 'heavy')
    assert not glob.glob(osp.join(out, 'runs', '*.json'))

    records = []
    for path in sorted(glob.glob(osp.join(heavy, 'runs', '*.json'))):
        with open(path) as f:
            records.append(json.load(f))
    assert len(records) == HEAVY_RUNS
    sweep = {}
    for r in records:
        assert r['num_train'] == 64 and r['curves']['epoch'] == [1, 2]
        assert r['config'].startswith('configs/fashion_mnist/heavy/')
        assert bool(r['curves']['loss_sub']) == (r['variant'] != 'baseline')
        if r['variant'].startswith('augdrop-r'):
            assert r['arch'] == 'vit'
            # In the smoke files (smoke_data): after the 64 training
            # images, the last 100 of the 60k.
            assert r['heldout_images'] == [64, 100]
            assert 0 <= r['heldout_top1'] <= 100
            sweep.setdefault(r['variant'], []).append(r)
        else:
            assert 'heldout_top1' not in r
    # Every ratio at seed 0; the best held-out top-1 at the other seed too.
    assert sorted(sweep) == ['augdrop-r0.1', 'augdrop-r0.2', 'augdrop-r0.3']
    first = {v: [r for r in runs if r['seed'] == 0][0]['heldout_top1']
             for v, runs in sweep.items()}
    chosen = max(sorted(first), key=lambda v: first[v])
    assert sorted(r['seed'] for r in sweep[chosen]) == [0, 1]
    assert all(len(runs) == 1 for v, runs in sweep.items() if v != chosen)

    summary = open(osp.join(heavy, 'summary.md')).read()
    assert '**(1)' in summary and '**(2)' in summary
    assert '**(3)' not in summary
    answers = re.findall(r'^- (.+?): \*\*(yes|no)\*\* -- ', summary, re.M)
    # (1): 3 ViT + 2 ResNet sub-models; (2): one line per model.
    assert len(answers) == 5 + 2
    assert f"AugDrop {chosen.split('-r')[1]} (the sweep's choice)" in summary
    table = summary[summary.index('ratio sweep'):]
    for ratio in ('0.1', '0.2', '0.3'):
        assert f'| AugDrop {ratio} |' in table
    assert table.count('**chosen**') == 1
    for name in ('top1.png', 'loss_curves_vit.png', 'loss_curves_resnet.png'):
        assert osp.isfile(osp.join(heavy, name)), name

    # The docs: the heavy block, and the side-by-side one with the regime
    # that has no record marked as such.
    text = docs.read_text()
    block = text[text.index('study-heavy:begin'):text.index('study-heavy:end')]
    assert 'Settings: 64 training images' in block
    assert '--regime heavy' in block and '](results/heavy/top1.png)' in block
    both = text[text.index('study-both:begin'):text.index('study-both:end')]
    rows = [line for line in both.splitlines() if line.startswith('| (')]
    assert rows and all(line.count('not trained yet') == 1 for line in rows)
    assert any('**yes**' in line or '**no**' in line for line in rows)
    assert '\nold\n<!-- study:end -->' in text  # not this regime's block

    # --no-train, every regime: the heavy summary again, and the regime
    # without records reported as not trained (with its command).
    again = study_here(out, work_dir, '--no-train', '--docs', str(docs))
    assert again.count('done before, skipped') == HEAVY_RUNS
    assert 'overfit regime: not trained yet' in again
    assert open(osp.join(heavy, 'summary.md')).read() == summary
    text = docs.read_text()
    block = text[text.index('study:begin'):text.index('study:end')]
    assert '**Not trained yet**' in block
    assert '`python tools/study/run_study.py --smoke' in block


def test_stopping_the_driver_stops_its_runs():
    """A driver stopped by an error, Ctrl-C or ``kill`` (SIGTERM, turned
    into SystemExit) stops the runs in its workers too, instead of leaving
    them training as orphans."""
    import time
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context
    sys.path.insert(0, osp.join(REPO, 'tools', 'study'))
    import run_study
    pool = ProcessPoolExecutor(2, mp_context=get_context('spawn'))
    # 2 running, 1 in the pool's call queue, the rest waiting.
    futures = [pool.submit(time.sleep, 120) for _ in range(6)]
    deadline = time.time() + 60
    while len(pool._processes) < 2 or not any(f.running() for f in futures):
        assert time.time() < deadline, 'the workers did not start'
        time.sleep(0.1)
    processes = list(pool._processes.values())
    start = time.time()
    run_study.stop_workers(pool)
    assert all(not p.is_alive() for p in processes)
    assert time.time() - start < 30
    assert futures[-1].cancelled()  # waiting: never started
    with pytest.raises(SystemExit) as exc:
        run_study._exit_on_sigterm(signal.SIGTERM, None)
    assert exc.value.code == 128 + signal.SIGTERM


def test_committed_records_rebuild_the_docs_blocks(tmp_path):
    """The study blocks of both regimes (docs/study.md), the side-by-side
    table (README.md) and the summaries in results/ are what ``--no-train``
    makes from the committed per-run records: nothing in them is typed by
    hand."""
    import shutil
    driver = load_driver()
    results = osp.join(REPO, 'results', 'fashion_mnist')
    out = str(tmp_path / 'results' / 'fashion_mnist')
    shutil.copytree(results, out, ignore=shutil.ignore_patterns('*.png'))
    # The repository's layout, with every block emptied: the driver must
    # write each one, into the file it belongs to.
    markers = [driver.DOCS_BEGIN, driver.DOCS_END, driver.BOTH_BEGIN,
               driver.BOTH_END, *driver.REGIMES['heavy'].docs]
    files = {}
    for name in ('README.md', osp.join('docs', 'study.md')):
        with open(osp.join(REPO, name)) as f:
            committed = f.read()
        copy = str(tmp_path / name)
        os.makedirs(osp.dirname(copy), exist_ok=True)
        emptied = committed
        for begin, end in zip(markers[::2], markers[1::2]):
            emptied = re.sub(re.escape(begin) + '.*?' + re.escape(end),
                             lambda _: f'{begin}\n{end}', emptied,
                             flags=re.S)
        # Each file has a block the driver must fill.
        assert emptied != committed, name
        with open(copy, 'w') as f:
            f.write(emptied)
        files[copy] = committed
    readme, docs = list(files)
    proc = subprocess.run(
        [sys.executable, 'tools/study/run_study.py', '--no-train', '--out',
         out, '--docs', docs, '--jobs', '2'],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert 'left out' not in proc.stdout, proc.stdout[-3000:]
    for copy, committed in files.items():
        with open(copy) as f:
            rebuilt = f.read().replace(f' --out {out} --docs {docs}', '')
        assert rebuilt == committed, copy
    for regime in ('', 'heavy'):
        for name in ('summary.csv', 'top1.png'):
            rebuilt_file = osp.join(out, regime, name)
            assert osp.isfile(rebuilt_file), rebuilt_file
        with open(osp.join(out, regime, 'summary.csv')) as f:
            rebuilt_csv = f.read()
        with open(osp.join(results, regime, 'summary.csv')) as f:
            assert rebuilt_csv == f.read()


def test_aug_pilot_sets_the_strength_and_trains(tmp_path):
    """tools/study/aug_pilot.py (the pilot behind the heavy regime's
    RandAugment magnitude): the magnitude given, or no RandAugment, and the
    rest of the config's pipeline kept; a tiny run reports one top-1 per
    epoch."""
    sys.path.insert(0, osp.join(REPO, 'tools', 'study'))
    import aug_pilot
    data_root = os.environ.get('FMNIST_ROOT',
                               osp.join(REPO, 'data', 'fashion_mnist'))

    def steps(magnitude):
        cfg = aug_pilot.pilot_cfg(aug_pilot.DEFAULT, magnitude, 2, 20000,
                                  10000, data_root)
        assert cfg.train_dataloader.dataset.indices == 20000
        assert [s['type'] for s in cfg.param_scheduler] == [
            'LinearLR', 'CosineAnnealingLR']
        return {s['type']: s for s in cfg.train_dataloader.dataset.pipeline}

    assert steps(9)['RandAugment']['magnitude_level'] == 9
    assert steps(5)['RandAugment']['magnitude_level'] == 5
    assert sorted(steps(None)) == ['PackInputs', 'RandomFlip']
    top1 = aug_pilot.main(['--no-randaugment', '--epochs', '1',
                           '--num-train', '128', '--num-test', '100',
                           '--data-root', data_root])
    assert len(top1) == 1 and 0 <= top1[0] <= 100
