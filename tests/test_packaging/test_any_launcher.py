"""A model-zoo Swin config plus the README's four lines trains under
launchers that are not ours -- mmpretrain's own ``tools/train.py`` (shipped
in its package as ``.mim/tools/train.py``) and ``mim train`` -- with the
mask token out of weight decay and no fifth line: the token is 1-D and the
zoo recipe's ``flat_decay_mult=0.0`` covers it. A recipe that would decay it
stops before its first update, saying what to add."""
import json
import os
import os.path as osp
import shutil
import subprocess
import sys

import pytest
from mmengine.utils import get_installed_path

HERE = osp.dirname(osp.abspath(__file__))
MMPRETRAIN_TRAIN = osp.join(get_installed_path('mmpretrain'), '.mim',
                            'tools', 'train.py')

FOUR_LINES = """\
_base_ = 'mmpretrain::swin_transformer/swin-tiny_16xb64_in1k.py'

custom_imports = dict(imports=['augsub_mm', 'optim_probe'],
                      allow_failed_imports=False)
model = dict(type='AugSubClassifier', augsub=dict(type='AugMask', ratio=0.5))
model_wrapper_cfg = dict(type='AugSubDistributedDataParallel')
randomness = dict(diff_rank_seed=True)
"""
# Test only: one iteration of 2 images from a tiny image folder, no
# validation, and the probe that reports the optimizer groups.
TEST_ONLY = """
train_dataloader = dict(
    batch_size=2, num_workers=0, persistent_workers=False,
    dataset=dict(_delete_=True, type='CustomDataset', data_root={root!r},
                 pipeline=[dict(type='LoadImageFromFile'),
                           dict(type='RandomResizedCrop', scale=224),
                           dict(type='PackInputs')]))
val_dataloader = None
val_cfg = None
val_evaluator = None
test_dataloader = None
test_cfg = None
test_evaluator = None
train_cfg = dict(by_epoch=False, max_iters=1, _delete_=True)
param_scheduler = []
default_hooks = dict(logger=dict(interval=1),
                     checkpoint=dict(interval=1000, by_epoch=False))
custom_hooks = [dict(type='OptimProbeHook')]
"""
DECAYING_RECIPE = """
# A recipe that decays 1-D parameters.
optim_wrapper = dict(paramwise_cfg=dict(_delete_=True, norm_decay_mult=0.0))
"""


def write_config(folder, image_folder, extra=''):
    path = osp.join(folder, 'swin-tiny_augmask_user.py')
    with open(path, 'w') as f:
        f.write(FOUR_LINES + TEST_ONLY.format(root=image_folder) + extra)
    return path


def run(cmd, cwd):
    env = dict(os.environ, PYTHONPATH=HERE)
    return subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=600)


def launchers():
    found = [pytest.param('tools/train.py', id='mmpretrain-tools-train')]
    found.append(pytest.param('mim', id='mim-train-mmpretrain', marks=(
        pytest.mark.skipif(shutil.which('mim', path=osp.dirname(
            sys.executable)) is None, reason='mim is not installed'), )))
    return found


def command(launcher, config, work_dir):
    if launcher == 'mim':
        mim = osp.join(osp.dirname(sys.executable), 'mim')
        return [mim, 'train', 'mmpretrain', config, '--work-dir', work_dir]
    return [sys.executable, MMPRETRAIN_TRAIN, config, '--work-dir', work_dir]


@pytest.mark.parametrize('launcher', launchers())
def test_zoo_swin_with_the_four_lines(launcher, image_folder, tmp_path):
    config = write_config(str(tmp_path), image_folder)
    work_dir = str(tmp_path / 'work')
    result = run(command(launcher, config, work_dir), cwd=str(tmp_path))
    assert result.returncode == 0, result.stdout[-5000:]
    assert 'loss_sub' in result.stdout
    with open(osp.join(work_dir, 'optim_probe.json')) as f:
        groups = json.load(f)
    token = groups['augsub.mask_token']
    assert token['shape'] == [96]  # Swin-T's embed_dims, 1-D
    assert token['weight_decay'] == 0
    assert token['changed']
    # The recipe's other decisions stand: weights decay, norms do not.
    assert groups['backbone.patch_embed.projection.weight'][
        'weight_decay'] == 0.05
    assert groups['backbone.norm3.weight']['weight_decay'] == 0


def test_a_recipe_that_would_decay_the_token_stops(image_folder, tmp_path):
    config = write_config(str(tmp_path), image_folder, DECAYING_RECIPE)
    work_dir = str(tmp_path / 'work')
    result = run(command('tools/train.py', config, work_dir),
                 cwd=str(tmp_path))
    assert result.returncode != 0
    assert "AugMask's mask token must be in exactly one parameter group, " \
        'with weight_decay=0' in result.stdout
    assert "constructor='AugSubOptimWrapperConstructor'" in result.stdout
    assert not osp.exists(osp.join(work_dir, 'optim_probe.json'))
