"""tools/analysis_tools/compare_runs.py: per-epoch means from mmengine's json
logs (exact, resume-aware) and one picture of real tiny runs."""
import json
import os
import os.path as osp
import sys

import numpy as np
import pytest
from conftest import REPO, TINY_CONFIGS, data_root_options

sys.path.insert(0, osp.join(REPO, 'tools', 'analysis_tools'))
import compare_runs  # noqa: E402


def write_log(path, records):
    os.makedirs(osp.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
        f.writelines(json.dumps(r) + '\n' for r in records)


def train_record(epoch, it, loss, loss_sub=None):
    record = dict(lr=1e-3, loss=loss, epoch=epoch, iter=it, step=it)
    if loss_sub is not None:
        record['loss_sub'] = loss_sub
    return record


def test_read_log_epoch_means_and_resume(tmp_path):
    work_dir = str(tmp_path / 'run')
    # First session: epochs 1-2, validation after epoch 2; killed during 3.
    write_log(osp.join(work_dir, '20240101_000000/vis_data/scalars.json'), [
        train_record(1, 1, 2.0, 2.2), train_record(1, 2, 1.0, 1.2),
        train_record(2, 3, 0.8, 1.0), train_record(2, 4, 0.6, 0.8),
        {'accuracy/top1': 40.0, 'step': 2},
        train_record(3, 5, 9.0, 9.0)])
    # Resumed session: epoch 3 again from its start, then validation.
    write_log(osp.join(work_dir, '20240101_010000/vis_data/scalars.json'), [
        train_record(3, 5, 0.5, 0.7), train_record(3, 6, 0.3, 0.5),
        {'accuracy/top1': 55.0, 'step': 3}])
    # A later test-only session in the same work dir is ignored.
    write_log(osp.join(work_dir, '20240101_020000/vis_data/scalars.json'),
              [{'accuracy/top1': 1.0, 'step': 0}])

    log = compare_runs.read_log(work_dir)
    assert log['epoch'] == [1, 2, 3]
    assert log['loss'] == pytest.approx([1.5, 0.7, 0.4])
    assert log['loss_sub'] == pytest.approx([1.7, 0.9, 0.6])
    assert log['val_epoch'] == [2, 3]
    assert log['top1'] == [40.0, 55.0]


def test_read_log_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match='LocalVisBackend'):
        compare_runs.read_log(str(tmp_path))
    path = str(tmp_path / 'iter_based.json')
    write_log(path, [dict(loss=1.0, iter=1, step=1)])
    with pytest.raises(ValueError, match='EpochBasedTrainLoop'):
        compare_runs.read_log(path)


def test_compare_real_runs(tmp_path, image_folder):
    """Two real tiny runs (plain and AugMask) through the Runner, then the
    tool on their work dirs."""
    from mmengine.config import Config
    from mmengine.runner import Runner
    work_dirs = []
    for name in ('vit-tiny_toy', 'vit-tiny_augmask_toy'):
        cfg = Config.fromfile(osp.join(TINY_CONFIGS, name + '.py'))
        cfg.merge_from_dict(data_root_options(image_folder))
        cfg.work_dir = str(tmp_path / name)
        cfg.experiment_name = name
        cfg.log_level = 'WARNING'
        Runner.from_cfg(cfg).train()
        work_dirs.append(cfg.work_dir)

    plain, augmask = (compare_runs.read_log(d) for d in work_dirs)
    assert plain['epoch'] == augmask['epoch'] == [1, 2]
    assert plain['loss_sub'] == [] and len(augmask['loss_sub']) == 2
    assert len(augmask['top1']) == 2

    out = str(tmp_path / 'compare.png')
    compare_runs.main(
        [*work_dirs, '--labels', 'baseline', 'AugMask', '--out', out])
    import matplotlib.image as mpimg
    image = mpimg.imread(out)
    assert image.shape[:2] == (400, 1400)  # figsize (14, 4) at 100 dpi
    # A drawn picture: many distinct colours, not a blank canvas.
    assert image[..., :3].std() > 0.05
    assert len(np.unique(image[..., :3].reshape(-1, 3), axis=0)) > 50

    with pytest.raises(SystemExit, match='one per run'):
        compare_runs.main([*work_dirs, '--labels', 'only-one'])
