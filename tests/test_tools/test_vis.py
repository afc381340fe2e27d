"""tools/visualization/vis_augsub.py: the masks it draws are read from the
real AugMask code path (token dropping, Swin mask token, input masking), in
the amounts AugMask promises, and the pictures are drawn."""
import os.path as osp
import sys

import numpy as np
import pytest
import torch
from conftest import REPO, TINY_CONFIGS

sys.path.insert(0, osp.join(REPO, 'tools', 'visualization'))
import vis_augsub  # noqa: E402

FASHION = osp.join(REPO, 'configs', 'fashion_mnist')
VIT_TOY = osp.join(TINY_CONFIGS, 'vit-tiny_augmask_toy.py')


def build(config, **options):
    import augsub_mm  # noqa: F401
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS
    cfg = Config.fromfile(config)
    cfg.merge_from_dict(options)
    init_default_scope('mmpretrain')
    return cfg, MODELS.build(cfg.model).eval()


def check_png(path, rows, cols):
    import matplotlib.image as mpimg
    image = mpimg.imread(path)
    # 2 inches per cell at 100 dpi (+ a title band).
    assert image.shape[1] == 200 * cols
    assert image.shape[0] == 200 * rows + 60
    assert image[..., :3].std() > 0.05  # not a blank canvas


def swin_config(tmp_path):
    path = tmp_path / 'swin_toy.py'
    path.write_text(f"""
_base_ = {VIT_TOY!r}
model = dict(
    backbone=dict(_delete_=True, type='SwinTransformer',
                  arch=dict(embed_dims=16, depths=[2, 2], num_heads=[2, 2]),
                  img_size=32, window_size=4, out_indices=(1, )),
    neck=dict(_delete_=True, type='GlobalAveragePooling'),
    head=dict(_delete_=True, type='LinearClsHead', num_classes=4,
              in_channels=32),
    augsub=dict(input_patch_size=8))
""")
    return str(path)


def test_token_drop_mask_from_real_forward(image_folder, tmp_path):
    _, model = build(VIT_TOY)
    augmask = vis_augsub.get_augmask(model)
    assert augmask is model.augsub
    torch.manual_seed(0)
    inputs = torch.randn(6, 3, 32, 32)
    result = vis_augsub.probe(model, augmask, inputs)
    assert result['masking'] == 'token_drop'
    mask = result['mask']
    assert mask.shape == (6, 4, 4)  # 32 px at patch size 8
    # int(16 * (1 - 0.5)) = 8 tokens kept in every sample.
    assert (mask.flatten(1).sum(1) == 8).all()
    assert len({tuple(m.flatten().tolist()) for m in mask}) > 1

    # The kept positions are exactly the indices AugMask drew.
    from augsub_mm.models.utils import masking
    drawn, draw = [], masking.random_keep_indices

    def recording(*args, **kwargs):
        drawn.append(draw(*args, **kwargs))
        return drawn[-1]

    masking.random_keep_indices = recording
    try:
        mask = vis_augsub.probe(model, augmask, inputs)['mask'].flatten(1)
    finally:
        masking.random_keep_indices = draw
    kept = torch.stack([(~m).nonzero().flatten() for m in mask])
    assert torch.equal(kept, drawn[0])

    out = str(tmp_path / 'vit.png')
    vis_augsub.main([VIT_TOY, '--out', out, '--num-images', '3',
                     '--draws', '2', '--cfg-options',
                     f'test_dataloader.dataset.data_root={image_folder}'])
    check_png(out, rows=3, cols=3)


def test_input_masking_resnet_fashion_images(tmp_path):
    from PIL import Image
    rng = np.random.default_rng(0)
    images = []
    for i in range(2):
        path = str(tmp_path / f'{i}.png')
        Image.fromarray(rng.integers(1, 255, (28, 28), np.uint8)).save(path)
        images.append(path)
    config = osp.join(FASHION,
                      'resnet18-w16_1xb64-augmask_fashion-mnist-2k.py')
    cfg, model = build(config)
    augmask = vis_augsub.get_augmask(model)
    data = model.data_preprocessor(
        vis_augsub.load_batch(cfg, images, 0), False)
    inputs = data['inputs']
    assert inputs.shape == (2, 1, 28, 28)
    view = vis_augsub.probe(model, augmask, inputs)['view']
    # 4 px patches: a 7 x 7 grid, 49 - int(49 * 0.5) = 25 masked per image.
    zero = (view == 0).view(2, 7, 4, 7, 4).all(dim=4).all(dim=2)
    assert zero.flatten(1).sum(1).tolist() == [25, 25]
    assert torch.equal(view[~(view == 0)], inputs[~(view == 0)])

    out = str(tmp_path / 'resnet.png')
    vis_augsub.main([config, '--images', *images, '--out', out])
    check_png(out, rows=2, cols=3)


def test_model_zoo_config_by_name(tmp_path):
    # A plain model-zoo config, named as in tools/train.py: AugMask 0.5 on
    # ResNet-18's input, in the paper's 32 px patches.
    from PIL import Image
    rng = np.random.default_rng(0)
    images = []
    for i in range(2):
        path = str(tmp_path / f'{i}.png')
        Image.fromarray(rng.integers(1, 255, (64, 64, 3), np.uint8)).save(
            path)
        images.append(path)
    out = str(tmp_path / 'zoo.png')
    vis_augsub.main(['mmpretrain::resnet/resnet18_8xb32_in1k.py', '--images',
                     *images, '--out', out])
    check_png(out, rows=2, cols=3)


def test_swin_mask_token_blocks(image_folder, tmp_path):
    config = swin_config(tmp_path)
    _, model = build(config)
    augmask = vis_augsub.get_augmask(model)
    inputs = torch.randn(3, 3, 32, 32)
    result = vis_augsub.probe(model, augmask, inputs)
    assert result['masking'] == 'mask_token'
    mask = result['mask']
    assert mask.shape == (3, 8, 8)  # patch size 4
    # 8 px blocks = 2 x 2 tokens, 4 x 4 blocks, 16 - int(16 * 0.5) masked.
    blocks = mask.view(3, 4, 2, 4, 2)
    assert (blocks.all(dim=4).all(dim=2) == blocks.any(dim=4).any(dim=2)).all()
    assert (blocks.all(dim=4).all(dim=2).flatten(1).sum(1) == 8).all()

    out = str(tmp_path / 'swin.png')
    vis_augsub.main([config, '--out', out, '--num-images', '2', '--draws',
                     '1', '--cfg-options',
                     f'test_dataloader.dataset.data_root={image_folder}'])
    check_png(out, rows=2, cols=2)


def test_ratio_override_and_errors():
    _, model = build(osp.join(
        FASHION, 'vit-tiny-p4_1xb64-augpath_fashion-mnist-2k.py'))
    with pytest.raises(ValueError, match='--ratio'):
        vis_augsub.get_augmask(model)
    augmask = vis_augsub.get_augmask(model, ratio=0.75)
    mask = vis_augsub.probe(model, augmask, torch.randn(2, 1, 28, 28))['mask']
    # 7 x 7 tokens, int(49 * 0.25) = 12 kept.
    assert (mask.flatten(1).sum(1) == 49 - 12).all()
