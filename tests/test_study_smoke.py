"""The Fashion-MNIST study end to end, at smoke size: every config of
configs/fashion_mnist trained by mmengine's Runner on real Fashion-MNIST
(Debian's dataset-fashion-mnist), per-run records, the summary with the
three claims answered, the plots, and resuming without retraining.

About 2 minutes on 2 free cores (longer on a loaded machine)."""
import csv
import glob
import json
import os.path as osp
import re
import subprocess
import sys

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
        assert r['num_train'] == 256 and r['num_test'] == 500
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
    again = study(out, work_dir)
    assert again.returncode == 0, again.stdout[-3000:]
    assert again.stdout.count('done before, skipped') == RUNS * SEEDS
    assert open(osp.join(out, 'summary.md')).read() == summary

    # --no-train over a complete grid: the same summary, and the command it
    # shows is the one that trains (without --no-train).
    listed = study(out, work_dir, '--no-train')
    assert listed.returncode == 0, listed.stdout[-3000:]
    assert open(osp.join(out, 'summary.md')).read() == summary
    # Over an incomplete grid (seed 2 never trained) it says so, and keeps
    # --no-train in the command.
    partial = study(out, work_dir, '--no-train', '--seeds', '0', '1', '2')
    assert partial.returncode == 0, partial.stdout[-3000:]
    assert partial.stdout.count('no record, left out') == RUNS
    assert '--no-train' in open(osp.join(out, 'summary.md')).read()


def load_driver():
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        'run_study', osp.join(REPO, 'tools', 'study', 'run_study.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_only_the_whole_study_rewrites_the_readme():
    driver = load_driver()
    readme = osp.join(REPO, 'README.md')

    def target(*argv):
        args = driver.parse_args(list(argv))
        seeds = args.seeds or (driver.SMOKE['seeds'] if args.smoke
                               else driver.SEEDS)
        return driver.docs_target(args, seeds)

    assert target() == readme
    assert target('--seeds', '2', '1', '0', '--jobs', '1') == readme
    # Pieces of the study, the smoke version, another results folder.
    assert target('--archs', 'resnet') is None
    assert target('--variants', 'baseline', 'augmask') is None
    assert target('--seeds', '0') is None
    assert target('--smoke') is None
    assert target('--out', '/tmp/elsewhere') is None
    # --docs decides when given.
    assert target('--archs', 'vit', '--docs', 'notes.md') == 'notes.md'
    assert target('--docs', '') is None
