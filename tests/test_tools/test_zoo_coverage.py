"""tools/analysis_tools/zoo_coverage.py --tiny: every backbone family of the
installed mmpretrain's zoo, one real training step per sub-model on the
family's tiny version (zoo_tiny.py) -- the CI form of the coverage matrix.

The whole run is one subprocess, as a user runs it (about a minute on 2
CPU cores); the tests below read its exit status, its JSON rows and the
README block it wrote.
"""
import json
import os.path as osp
import re
import sys

import pytest
from tool_runner import REPO, run

sys.path.insert(0, osp.join(REPO, 'tools', 'analysis_tools'))
import zoo_coverage  # noqa: E402
import zoo_tiny  # noqa: E402

TOOL = 'tools/analysis_tools/zoo_coverage.py'
CELLS = zoo_coverage.SUB_MODELS
# Zoo configs that mmpretrain 1.2 itself cannot train, at any size, and the
# error that says so: EfficientFormer's head is the distillation one, whose
# loss mmpretrain does not implement; the cheapest LeViT config is the
# deploy-mode one, whose head cannot switch back. Any other family whose
# plain step fails means a broken tiny version.
UPSTREAM = {
    'EfficientFormer': "doesn't support to train the distilled version",
    'LeViT': "doesn't support training in distillation mode",
}


@pytest.fixture(scope='module')
def tiny_run(tmp_path_factory):
    """One ``--tiny`` run over every family: (process, rows, README text,
    the README block's text)."""
    tmp = tmp_path_factory.mktemp('zoo_coverage')
    readme = tmp / 'README.md'
    readme.write_text(f'intro\n{zoo_coverage.BEGIN}\nstale table\n'
                      f'{zoo_coverage.END}\noutro\n')
    rows_file = tmp / 'rows.json'
    proc = run([sys.executable, TOOL, '--tiny', '--json', str(rows_file),
                '--readme', str(readme)], timeout=900)
    assert rows_file.exists(), proc.stdout[-3000:]
    text = readme.read_text()
    block = text.split(zoo_coverage.BEGIN + '\n')[1].split(
        zoo_coverage.END)[0]
    return proc, json.loads(rows_file.read_text()), text, block


def cells(rows):
    """(family, column, cell) of every cell the run wrote."""
    for row in rows:
        for key in ('plain', ) + CELLS:
            if key in row:
                yield row['backbone'], key, row[key]


def test_every_family_trains_without_failed_cell(tiny_run):
    proc, rows, _, _ = tiny_run
    failed = [c for c in cells(rows) if c[2].startswith('FAILED')]
    assert not failed, failed
    assert proc.returncode == 0, proc.stdout[-3000:]
    # One row per family of the installed zoo, and a tiny version for each
    # (the tool refuses a family without one, see below).
    families = [row['backbone'] for row in rows]
    assert len(families) == len(set(families))
    assert set(families) == set(zoo_tiny.TINY), (
        'TINY and the installed zoo disagree: '
        f'{set(families) ^ set(zoo_tiny.TINY)}')
    assert 'total time' in proc.stdout


def test_no_cell_is_a_placeholder(tiny_run):
    _, rows, _, _ = tiny_run
    vague = [c for c in cells(rows)
             if re.search(r'not yet|does not support', c[2], re.I)]
    assert not vague, vague


def test_only_upstream_configs_do_not_train(tiny_run):
    _, rows, _, _ = tiny_run
    untrained = {row['backbone']: row['plain'] for row in rows
                 if 'plain' in row}
    assert set(untrained) <= set(UPSTREAM), untrained
    for family, error in untrained.items():
        assert UPSTREAM[family] in error, (family, error)


def test_augmask_is_exact_on_every_family_that_trains(tiny_run):
    _, rows, _, _ = tiny_run
    trained = [row for row in rows if 'plain' not in row]
    assert len(trained) >= len(rows) - len(UPSTREAM)
    # Conformer (two scores) included: every family that trains.
    not_exact = {row['backbone']: row['AugMask'] for row in trained
                 if not row['AugMask'].startswith('exact: ')}
    assert not not_exact, not_exact


def test_exact_drop_cells_name_what_they_drop(tiny_run):
    _, rows, _, _ = tiny_run
    # AugDrop: the layers it drives, and the largest fraction of a path
    # the tool measured dropped (more than the ratio, 0.5, + its 0.08
    # sampling tolerance would be a FAILED cell: dropouts in series).
    forms = {'AugDrop': r'^exact: dropout \((\d+) layers?(; \d+ in series '
                        r"after one of them left at the recipe's rate)?\), "
                        r'at most 0\.[0-5]\d of a path dropped$',
             'AugPath': r'^exact: drop-path \((\d+) slots?[,)]'}
    seen = 0
    for family, column, cell in cells(rows):
        if column in forms and cell.startswith('exact'):
            match = re.match(forms[column], cell)
            assert match and int(match.group(1)) > 0, (family, cell)
            seen += 1
    # Dozens of families have dropout or drop-path blocks at tiny size.
    assert seen >= 40, seen


def test_readme_block_is_the_printed_table(tiny_run):
    proc, rows, text, block = tiny_run
    assert text.startswith('intro\n') and text.endswith('outro\n')
    assert 'stale table' not in text
    assert block.startswith(
        'Generated by `python tools/analysis_tools/zoo_coverage.py --tiny`')
    assert block in proc.stdout
    for row in rows:
        assert f"| {row['backbone']} (`{row['config']}`) |" in block


def test_family_without_tiny_version_is_an_error(monkeypatch):
    zoo = {'ResNet': ['resnet50.py'], 'VisionTransformer': ['deit.py']}
    monkeypatch.setattr(zoo_coverage, 'classifier_configs', lambda root: zoo)
    monkeypatch.delitem(zoo_tiny.TINY, 'ResNet')
    with pytest.raises(SystemExit, match=r"\['ResNet'\].*TINY") as error:
        zoo_coverage.main(['--tiny'])
    assert 'VisionTransformer' not in str(error.value)
    with pytest.raises(KeyError, match='ResNet.*TINY'):
        zoo_tiny.tiny_model(dict(backbone=dict(type='ResNet', depth=50),
                                 head=dict(type='LinearClsHead')))


def test_tiny_with_all_is_refused():
    with pytest.raises(SystemExit):
        zoo_coverage.parse_args(['--tiny', '--all'])


def test_tables_are_restored_and_shrunk_once():
    from mmpretrain.models.backbones import (EfficientNetV2, ResNet,
                                             ResNetV1c)
    base = ResNet.arch_settings
    with zoo_tiny.tables_patched('ResNetV1c'):
        assert ResNetV1c.arch_settings[50][1] == (1, 1, 1, 1)
        assert ResNet.arch_settings is base
    assert 'arch_settings' not in vars(ResNetV1c)
    assert ResNetV1c.arch_settings[50][1] == (3, 4, 6, 3)

    zoo_b0 = EfficientNetV2.arch_settings['b0']
    with zoo_tiny.tables_patched('EfficientNetV2'):
        tiny_b0 = EfficientNetV2.arch_settings['b0']
        assert all(row[0] == 1 for row in tiny_b0)  # one block per stage
        with zoo_tiny.tables_patched('EfficientNetV2'):
            assert EfficientNetV2.arch_settings['b0'] == tiny_b0
        assert EfficientNetV2.arch_settings['b0'] == tiny_b0
    assert EfficientNetV2.arch_settings['b0'] == zoo_b0
