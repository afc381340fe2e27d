"""The new-style (pure Python, ``read_base()``) configs under
``augsub_mm/configs``: one AugMask config per family (ViT, Swin, ResNet),
each its plain twin plus the switch-on lines, builds and trains one
iteration of its real architecture on a tiny image folder."""
import os.path as osp

import pytest
import torch
from conftest import REPO
from mmengine.config import Config
from mmengine.runner import Runner

from augsub_mm.models.families import get_family

CONFIGS = osp.join(REPO, 'augsub_mm', 'configs')
FAMILIES = {
    'vit': ('vit/deit_small_4xb256_augmask_in1k.py', 'VisionTransformer',
            'token_drop'),
    'swin': ('swin/swin_tiny_16xb64_augmask_in1k.py', 'SwinTransformer',
             'mask_token'),
    'resnet': ('resnet/resnet50_8xb32_augmask_in1k.py', 'ResNet', 'input'),
}


def one_iteration(cfg, root, work_dir):
    """Test only: 2 images of a tiny folder through the recipe's own train
    pipeline, one iteration, no validation."""
    cfg.train_dataloader = dict(
        batch_size=2, num_workers=0, persistent_workers=False,
        sampler=cfg.train_dataloader.sampler,
        dataset=dict(type='CustomDataset', data_root=root,
                     pipeline=cfg.train_pipeline))
    for key in ('val_dataloader', 'val_cfg', 'val_evaluator',
                'test_dataloader', 'test_cfg', 'test_evaluator'):
        cfg[key] = None
    cfg.train_cfg = dict(by_epoch=False, max_iters=1)
    cfg.param_scheduler = []
    cfg.default_hooks.logger.interval = 1
    cfg.default_hooks.checkpoint.interval = 1000
    cfg.work_dir = work_dir
    cfg.experiment_name = f'new_style_{osp.basename(work_dir)}'
    return cfg


@pytest.mark.parametrize('family', sorted(FAMILIES))
def test_builds_and_trains_one_iteration(family, image_folder, tmp_path):
    path, backbone, masking = FAMILIES[family]
    cfg = Config.fromfile(osp.join(CONFIGS, path))
    plain = Config.fromfile(osp.join(CONFIGS, path.replace('_augmask', '')))
    # The switch-on lines are the only difference from the plain twin.
    assert plain.model.type.__name__ == 'ImageClassifier'
    assert cfg.model.type.__name__ == 'AugSubClassifier'
    assert cfg.model_wrapper_cfg == dict(type='AugSubDistributedDataParallel')
    assert cfg.randomness.diff_rank_seed
    assert cfg.model.backbone == plain.model.backbone
    assert cfg.optim_wrapper == plain.optim_wrapper

    runner = Runner.from_cfg(one_iteration(cfg, image_folder,
                                           str(tmp_path / family)))
    model = runner.model
    assert type(model.backbone).__name__ == backbone
    assert model.augsub.resolve(get_family(model.backbone)) == masking
    before = [p.detach().clone() for p in model.parameters()]
    runner.train()
    sub = runner.message_hub.get_scalar('train/loss_sub').current()
    assert sub > 0
    assert any(not torch.equal(b, p.detach())
               for b, p in zip(before, model.parameters()))
