"""tools/analysis_tools/timm_coverage.py --subset: one real training step
per sub-model on one cheap model of each kind of timm architecture (ViT,
DeiT, EVA, Swin, ConvNeXt, ResNet, EfficientNet, MaxViT, Mixer, PVT-v2) --
the CI form of docs/timm_coverage.md's matrix. Run in-process (about 15 s
on 2 CPU cores); the tests read its exit status, its JSON rows and the
docs block it wrote."""
import json
import os.path as osp
import sys
import warnings

import pytest
from tool_runner import REPO

pytest.importorskip('timm')
sys.path.insert(0, osp.join(REPO, 'tools', 'analysis_tools'))
import timm_coverage  # noqa: E402

CELLS = timm_coverage.SUB_MODELS


@pytest.fixture(scope='module')
def subset_run(tmp_path_factory):
    """(exit status, rows by module, docs text, the docs block's text)."""
    import torch
    tmp = tmp_path_factory.mktemp('timm_coverage')
    docs = tmp / 'timm_coverage.md'
    docs.write_text(f'intro\n{timm_coverage.BEGIN}\nstale table\n'
                    f'{timm_coverage.END}\noutro\n')
    rows_file = tmp / 'rows.json'
    threads = torch.get_num_threads()
    try:
        with warnings.catch_warnings():
            status = timm_coverage.main(['--subset', '--json',
                                         str(rows_file), '--docs',
                                         str(docs)])
    finally:
        torch.set_num_threads(threads)
    rows = {r['module']: r for r in json.loads(rows_file.read_text())}
    text = docs.read_text()
    block = text.split(timm_coverage.BEGIN + '\n')[1].split(
        timm_coverage.END)[0]
    return status, rows, text, block


def test_subset_has_no_failed_cell(subset_run):
    status, rows, _, _ = subset_run
    assert set(rows) == set(timm_coverage.SUBSET)
    # Every subset model trains plainly ('plain' is only set when it does
    # not), and no sub-model cell is a bug.
    assert not [(m, r['plain']) for m, r in rows.items() if 'plain' in r]
    failed = [(m, k, r[k]) for m, r in rows.items() for k in CELLS
              if r[k].startswith('FAILED')]
    assert not failed, failed
    assert status == 0


@pytest.mark.parametrize('module,form', [
    ('vision_transformer', 'token drop'), ('deit', 'token drop'),
    ('eva', 'token drop'), ('swin_transformer', 'mask token'),
    ('pvt_v2', 'mask token'), ('mlp_mixer', 'mask token'),
    ('resnet', 'input masking'), ('convnext', 'input masking')])
def test_augmask_form(subset_run, module, form):
    _, rows, _, _ = subset_run
    assert rows[module]['AugMask'] == 'exact: ' + form


def test_augdrop_and_augpath_on_a_vit(subset_run):
    _, rows, _, _ = subset_run
    row = rows['vision_transformer']
    assert row['AugDrop'].startswith('exact: dropout (')
    assert row['AugPath'].startswith('exact: drop-path (')
    # A CNN without block dropouts: refused with the method's reason and
    # what to use instead.
    assert rows['resnet']['AugDrop'].startswith(
        'refused: AugDrop needs dropout layers inside the blocks')


def test_docs_block_is_written(subset_run):
    _, rows, text, block = subset_run
    assert text.startswith('intro\n') and text.endswith('outro\n')
    assert 'stale table' not in text
    assert '--subset' in block and 'timm modules:' in block
    for module in rows:
        assert f'| {module} (`' in block


def test_vit_relatives_are_read_from_the_structure():
    """What the matrix fails as "input masking of a ViT relative": a
    patch embedding of any class where augsub_mm looks for one (Gemma-4's
    encoder.patch_embed, Twins' patch_embeds), timm's PatchEmbed, a
    patch_drop site; not a CNN's stem."""
    import torch.nn as nn

    class Embed(nn.Module):  # no timm class
        pass

    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.patch_embed = Embed()

    gemma_like = nn.Module()
    gemma_like.encoder = Encoder()
    twins_like = nn.Module()
    twins_like.patch_embeds = nn.ModuleList([Embed(), Embed()])
    cnn = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU())
    cnn_with_stem = nn.Module()
    cnn_with_stem.stem = nn.Conv2d(3, 8, 4, 4)
    assert timm_coverage.vit_relative(gemma_like)
    assert timm_coverage.vit_relative(twins_like)
    assert not timm_coverage.vit_relative(cnn)
    assert not timm_coverage.vit_relative(cnn_with_stem)
