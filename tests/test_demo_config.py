"""The demo configs: real Fashion-MNIST through mmpretrain's dataset
machinery, validated on the 10k test set (not on training images)."""
import os
import os.path as osp

import pytest
from mmengine import Config
from mmpretrain.registry import DATASETS, MODELS

import augsub_mm  # noqa: F401
from augsub_mm.utils import prepare_fashion_mnist

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEMO = osp.join(REPO, 'configs', 'demo',
                'vit-tiny-p4_1xb128-augmask-3e_fashion-mnist.py')


@pytest.fixture(scope='module')
def fmnist_root():
    # tools/run_tests.sh prepares it; this makes the test self-sufficient.
    return prepare_fashion_mnist(
        os.environ.get('FMNIST_ROOT', osp.join(REPO, 'data',
                                               'fashion_mnist')))


def test_demo_splits_are_the_real_ones(fmnist_root):
    cfg = Config.fromfile(DEMO)
    train = dict(cfg.train_dataloader.dataset, data_root=fmnist_root)
    val = dict(cfg.val_dataloader.dataset, data_root=fmnist_root)
    train_set, val_set = DATASETS.build(train), DATASETS.build(val)
    assert len(train_set) == 20000
    assert len(val_set) == 10000
    sample = val_set[0]
    assert tuple(sample['inputs'].shape) == (1, 28, 28)


def test_demo_model_is_augmask_on_the_plain_model():
    cfg = Config.fromfile(DEMO)
    model = MODELS.build(cfg.model)
    assert type(model).__name__ == 'AugSubClassifier'
    assert model.augsub.ratio == 0.5
    assert cfg.model_wrapper_cfg.type == 'AugSubDistributedDataParallel'
    base = Config.fromfile(DEMO.replace('-augmask', ''))
    assert base.model.type == 'ImageClassifier'
    plain = MODELS.build(base.model)
    assert set(plain.state_dict()) == set(model.state_dict())
