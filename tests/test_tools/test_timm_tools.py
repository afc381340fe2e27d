"""A timm model (TimmClassifier config) trained with AugSub as users run it:
``tools/dist_train.sh CONFIG 2 --augsub AugMask:0.5`` on 2 CPU processes
(gloo), and mmpretrain's own ``tools/train.py`` (``.mim/tools/train.py``)
on the config with the README's four lines. The distributed run's ranks end
with the same parameters while each drew its own masks, and its checkpoint
is a timm state dict: it loads strictly into the plain TimmClassifier
config and into ``timm.create_model``."""
import os.path as osp
import sys

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.runner import load_checkpoint
from mmengine.utils import get_installed_path
from mmpretrain.registry import MODELS

import augsub_mm  # noqa: F401  allow-lists mmengine's checkpoint globals
from tool_runner import (CONFIGS, data_options, final_lines, free_port, run,
                         tool_env)

timm = pytest.importorskip('timm')

TOY = osp.join(CONFIGS, 'timm-vit-tiny_toy.py')
TOY_AUGMASK = osp.join(CONFIGS, 'timm-vit-tiny_augmask_toy.py')
MMPRETRAIN_TRAIN = osp.join(get_installed_path('mmpretrain'), '.mim',
                            'tools', 'train.py')


def test_dist_train_with_the_augsub_flag(tmp_path, image_folder):
    """With the layer-wise lr decay of the MAE fine-tunes, through
    TimmLayerDecayOptimWrapperConstructor (the switch puts
    AugSubOptimWrapperConstructor over it)."""
    probe_cfg = tmp_path / 'probe_cfg.py'
    probe_cfg.write_text(
        f'_base_ = [{TOY!r}]\n'
        "custom_imports = dict(imports=['augsub_mm', 'augsub_probe'], "
        'allow_failed_imports=False)\n'
        "custom_hooks = [dict(type='AugSubProbeHook')]\n"
        "optim_wrapper = dict(constructor='TimmLayerDecayOptimWrapper"
        "Constructor', paramwise_cfg=dict(layer_decay_rate=0.5))\n")
    work_dir = str(tmp_path / 'work')
    env = dict(tool_env(), PORT=str(free_port()))
    proc = run(['bash', 'tools/dist_train.sh', str(probe_cfg), '2',
                '--augsub', 'AugMask:0.5', '--work-dir', work_dir,
                '--no-validate',
                *data_options(image_folder, splits=('train', ),
                              **{'train_cfg.max_epochs': 1})], env=env)
    assert proc.returncode == 0, proc.stdout[-5000:]
    assert 'loss_sub' in proc.stdout
    checkpoint = osp.join(work_dir, 'epoch_1.pth')
    assert final_lines(proc.stdout)['Checkpoint'] == [checkpoint]
    rank0, rank1 = [torch.load(osp.join(work_dir, f'probe_rank{r}.pt'))
                    for r in (0, 1)]
    assert rank0['wrapper'] == rank1['wrapper'] == \
        'AugSubDistributedDataParallel'
    # 32 images, 2 ranks x batch 8: 2 iterations; 16 patches, half kept,
    # at timm's patch-drop site.
    assert len(rank0['kept']) == len(rank1['kept']) == 2
    for kept0, kept1 in zip(rank0['kept'], rank1['kept']):
        assert kept0.shape == kept1.shape == (8, 8)
        assert not torch.equal(kept0, kept1)
    assert torch.equal(rank0['params'], rank1['params'])
    # 2 blocks: the stem at 0.5 ** 3, block i at 0.5 ** (2 - i), the head
    # at 1 (the names as the wrapped model's, under DDP).
    scales = rank0['lr_scales']
    assert scales['model.cls_token'] == scales[
        'model.patch_embed.proj.weight'] == pytest.approx(0.5**3)
    assert scales['model.blocks.0.attn.qkv.weight'] == pytest.approx(0.25)
    assert scales['model.blocks.1.mlp.fc2.weight'] == pytest.approx(0.5)
    assert scales['model.head.weight'] == 1.

    # The checkpoint is the plain model's (token drop adds no parameter).
    init_default_scope('mmpretrain')
    plain = MODELS.build(Config.fromfile(TOY).model)
    assert type(plain).__name__ == 'TimmClassifier'
    load_checkpoint(plain, checkpoint, strict=True)
    cfg = Config.fromfile(TOY).model
    net = timm.create_model(
        cfg.model_name, pretrained=False, num_classes=4,
        **{k: cfg[k] for k in ('img_size', 'patch_size', 'depth',
                               'embed_dim', 'num_heads')})
    state = torch.load(checkpoint, map_location='cpu',
                       weights_only=False)['state_dict']
    net.load_state_dict(state)
    x = torch.rand(2, 3, 32, 32)
    plain.eval()
    net.eval()
    with torch.no_grad():
        assert torch.equal(plain(x), net(x))


def test_mmpretrain_train_py_with_the_four_lines(tmp_path, image_folder):
    work_dir = str(tmp_path / 'work')
    proc = run([sys.executable, MMPRETRAIN_TRAIN, TOY_AUGMASK,
                '--work-dir', work_dir, '--no-persistent-workers',
                *data_options(image_folder, **{'train_cfg.max_epochs': 1})])
    assert proc.returncode == 0, proc.stdout[-5000:]
    assert 'loss_sub' in proc.stdout
    assert 'accuracy/top1' in proc.stdout
    assert osp.isfile(osp.join(work_dir, 'epoch_1.pth'))
