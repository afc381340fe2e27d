"""ThreeAugment (DeiT III's 3-Augment) and the DeiT-III pre-training
pipeline it belongs to."""
import glob
import os.path as osp

import mmcv
import numpy as np
import pytest
from mmengine.config import Config
from mmengine.dataset import Compose
from mmengine.registry import init_default_scope
from mmpretrain.registry import TRANSFORMS
from PIL import ImageFilter

import augsub_mm  # noqa: F401
from augsub_mm.datasets.transforms import ThreeAugment

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def image(seed=0):
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    img[:, :20] = (255, 0, 0)  # a flat blue (BGR) part: blur keeps it
    return img


def classify(img, out):
    """Which of the three operations turned ``img`` into ``out``."""
    weights = np.array([0.114, 0.587, 0.299])  # B, G, R
    grey = (img * weights).sum(-1).astype(np.uint8)
    if np.array_equal(out, np.repeat(grey[..., None], 3, -1)):
        return 'grayscale'
    if np.array_equal(out, mmcv.solarize(img, thr=128)):
        return 'solarize'
    # A blur keeps flat regions and the mean, and lowers the variance.
    assert np.array_equal(out[:, :10], img[:, :10])
    assert abs(out.astype(float).mean() - img.mean()) < 3
    assert out[:, 22:].std() < img[:, 22:].std()
    return 'blur'


def test_registered_and_built_from_a_config():
    t = TRANSFORMS.build(dict(type='ThreeAugment', solarize_thr=100))
    assert isinstance(t, ThreeAugment) and t.solarize_thr == 100


def test_exactly_one_of_the_three_uniformly(monkeypatch):
    radii = []
    blur = ImageFilter.GaussianBlur

    def recording_blur(radius):
        radii.append(radius)
        return blur(radius)

    monkeypatch.setattr(ImageFilter, 'GaussianBlur', recording_blur)
    t = ThreeAugment()
    np.random.seed(0)
    img = image()
    seen = [classify(img, t(dict(img=img.copy()))['img'])
            for _ in range(300)]
    counts = {k: seen.count(k) for k in ('grayscale', 'solarize', 'blur')}
    assert all(70 < c < 130 for c in counts.values()), counts
    assert len(radii) == counts['blur']
    assert 0.1 <= min(radii) < 0.3 and 1.8 < max(radii) <= 2.0


def test_grayscale_uses_luma_in_bgr_order():
    t = ThreeAugment()
    red = np.zeros((4, 4, 3), np.uint8)
    red[..., 2] = 255  # BGR
    out = t.transforms[0](dict(img=red))['img']
    assert out.shape == (4, 4, 3)
    assert (out == int(0.299 * 255)).all()


@pytest.mark.parametrize('radius', [(2.0, ), (2.0, 0.1), (-1, 1)])
def test_bad_blur_radius(radius):
    with pytest.raises(ValueError, match='blur_radius'):
        ThreeAugment(blur_radius=radius)


@pytest.mark.parametrize('res', [224, 192, 160])
def test_deit3_pretraining_pipeline(res, image_folder):
    init_default_scope('mmpretrain')
    cfg = Config.fromfile(osp.join(
        REPO, 'configs', '_base_', 'datasets',
        f'imagenet_bs64_deit3-3aug_{res}.py'))
    types = [t['type'] for t in cfg.train_pipeline]
    assert types == ['LoadImageFromFile', 'RandomResizedCrop', 'RandomFlip',
                     'ThreeAugment', 'ColorJitter', 'PackInputs']
    assert cfg.train_pipeline[4] == dict(type='ColorJitter', brightness=0.3,
                                         contrast=0.3, saturation=0.3)
    assert cfg.train_dataloader.dataset.pipeline == cfg.train_pipeline
    assert cfg.train_dataloader.sampler.type == 'RepeatAugSampler'
    pipeline = Compose(cfg.train_pipeline)
    path = sorted(glob.glob(osp.join(image_folder, '*', '*.png')))[0]
    out = pipeline(dict(img_path=path, gt_label=0))
    assert out['inputs'].shape == (3, res, res)
    val = Compose(cfg.val_dataloader.dataset.pipeline)
    assert val(dict(img_path=path, gt_label=0))['inputs'].shape == \
        (3, res, res)
