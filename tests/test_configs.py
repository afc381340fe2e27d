"""The configs: every one builds; the paper's recipes are what the configs
say; every AugSub config is its baseline plus the switch; a tiny-arch
version of each family trains in the Runner."""
import glob
import os.path as osp
import re

import pytest
import torch
from mmcv.cnn.bricks import DropPath
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.runner import Runner
from mmpretrain.registry import MODELS

import augsub_mm  # noqa: F401
from conftest import REPO, make_image_folder

CONFIG_DIR = osp.join(REPO, 'configs')
ALL_CONFIGS = sorted(
    p for p in glob.glob(osp.join(CONFIG_DIR, '**', '*.py'), recursive=True)
    if '_base_' not in p.split(osp.sep))
FAMILIES = ('deit3', 'mae', 'swin', 'resnet')
PAPER_CONFIGS = [p for p in ALL_CONFIGS
                 if osp.basename(osp.dirname(p)) in FAMILIES]
AUGMASK_CONFIGS = [p for p in PAPER_CONFIGS if '-augmask' in p]
SWITCH = dict(
    custom_imports=dict(imports=['augsub_mm'], allow_failed_imports=False),
    augsub=dict(type='AugMask', ratio=0.5),
    wrapper='AugSubDistributedDataParallel')
# Backbones built on the meta device (no memory, no init): a ViT-H is 2.5 GB
# on the CPU. Swin and ResNet read values while building, so they need real
# tensors; they are small.
META = ('DeiT3', 'VisionTransformer')


def rel(path):
    return osp.relpath(path, CONFIG_DIR)


def baseline_of(path):
    return path.replace('-augmask', '')


@pytest.fixture(autouse=True)
def mmpretrain_scope():
    init_default_scope('mmpretrain')


def build_model(cfg):
    backbone = cfg.model.get('backbone') or {}  # none: a TimmClassifier
    with torch.device('meta' if backbone.get('type') in META else 'cpu'):
        return MODELS.build(cfg.model)


def test_every_family_has_configs():
    for family in FAMILIES:
        assert any(f'{family}{osp.sep}' in p for p in AUGMASK_CONFIGS)
    names = [osp.basename(p) for p in AUGMASK_CONFIGS]
    assert any(n.startswith('deit3-small-p16_') for n in names)
    assert any(p.startswith(osp.join(CONFIG_DIR, 'mae', 'vit-base'))
               for p in AUGMASK_CONFIGS)
    assert len(PAPER_CONFIGS) == 2 * len(AUGMASK_CONFIGS) == 40


@pytest.mark.parametrize('path', ALL_CONFIGS, ids=rel)
def test_builds(path, monkeypatch):
    # The study's configs import a study tool from there (see their NOTE).
    monkeypatch.syspath_prepend(osp.join(REPO, 'tools', 'study'))
    cfg = Config.fromfile(path)
    model = build_model(cfg)
    # The switch on a TimmClassifier config builds its AugSub classifier.
    timm_switch = cfg.model.type == 'AugSubClassifier' and \
        'model_name' in cfg.model
    assert type(model).__name__ == ('AugSubTimmClassifier' if timm_switch
                                    else cfg.model.type)


def zoo_bases(path):
    """The ``mmpretrain::`` files a config inherits, through our bases."""
    text = open(path).read()
    found = set(re.findall(r"mmpretrain::([\w/.-]+\.py)", text))
    for base in re.findall(r"'(\.{1,2}/[\w/.-]+\.py)'", text):
        found |= zoo_bases(osp.normpath(osp.join(osp.dirname(path), base)))
    return found


@pytest.mark.parametrize('path', PAPER_CONFIGS, ids=rel)
def test_inherits_the_matching_zoo_config(path):
    name = osp.basename(baseline_of(path))
    family = osp.basename(osp.dirname(path))
    if family == 'deit3':
        size = name.split('_')[0]  # deit3-base-p16
        want = (f'deit3/{size}_64xb' if '-ft-' in name else
                f'_base_/models/deit3/{size}-224.py')
    elif family == 'mae':
        want = f'mae/benchmarks/{name}'
    elif family == 'swin':
        want = f'swin_transformer/{name}'
    else:  # the zoo's RSB recipes are for ResNet-50 only
        want = 'resnet/resnet50_8xb256-rsb-a2-300e_in1k.py'
    assert any(base.startswith(want) for base in zoo_bases(path)), \
        zoo_bases(path)


def without_switch(cfg):
    cfg = cfg.to_dict()
    cfg['model'].pop('type')
    cfg['model'].pop('augsub', None)
    for key in ('custom_imports', 'model_wrapper_cfg'):
        cfg.pop(key, None)
    cfg.get('randomness', {}).pop('diff_rank_seed', None)
    if cfg['optim_wrapper'].get('constructor') == \
            'AugSubOptimWrapperConstructor':
        cfg['optim_wrapper'].pop('constructor')
    return cfg


@pytest.mark.parametrize('path', AUGMASK_CONFIGS, ids=rel)
def test_augsub_config_is_its_baseline_plus_the_switch(path):
    cfg = Config.fromfile(path)
    base = Config.fromfile(baseline_of(path))
    assert cfg.custom_imports == SWITCH['custom_imports']
    assert cfg.model.type == 'AugSubClassifier'
    assert cfg.model.augsub == SWITCH['augsub']
    assert cfg.model_wrapper_cfg.type == SWITCH['wrapper']
    assert cfg.randomness.diff_rank_seed is True
    assert base.model.type == 'ImageClassifier'
    assert 'model_wrapper_cfg' not in base
    # The same recipe, apart from the switch.
    assert without_switch(cfg) == without_switch(base)
    model = build_model(cfg)
    if cfg.model.backbone.type == 'DeiT3':
        # ln2 of mmpretrain's DeiT3 layers gets no gradient (1.2.0).
        assert cfg.model_wrapper_cfg.find_unused_parameters is True
        assert base.find_unused_parameters is True
    else:
        assert 'find_unused_parameters' not in cfg.model_wrapper_cfg
    # A learnable mask token is kept out of weight decay by the
    # constructor, on top of the recipe's own paramwise_cfg.
    has_token = getattr(model.augsub, 'mask_token', None) is not None
    assert has_token == (cfg.model.backbone.type == 'SwinTransformer')
    if has_token:
        assert cfg.optim_wrapper.constructor == \
            'AugSubOptimWrapperConstructor'
        assert cfg.optim_wrapper.paramwise_cfg == \
            base.optim_wrapper.paramwise_cfg


def drop_path_rates(cfg):
    model = build_model(cfg)
    return [m.drop_prob for m in model.backbone.modules()
            if isinstance(m, DropPath)]


def pipeline_types(pipeline):
    return [t['type'] for t in pipeline]


# size: resolution, lr, weight decay (400 / 800 epochs), drop-path (400 /
# 800 epochs), as the paper gives them (weight decay of B/L/H: DeiT III's).
DEIT3 = {
    'small-p16': (224, 4e-3, (0.03, 0.05), (0.0, 0.05)),
    'base-p16': (192, 3e-3, (0.02, 0.02), (0.1, 0.2)),
    'large-p16': (192, 3e-3, (0.02, 0.02), (0.4, 0.45)),
    'huge-p14': (160, 3e-3, (0.02, 0.02), (0.5, 0.6)),
}


@pytest.mark.parametrize('size', DEIT3)
@pytest.mark.parametrize('epochs', [400, 800])
@pytest.mark.parametrize('augmask', [False, True])
def test_deit3_pretraining_recipe(size, epochs, augmask):
    res, lr, wds, dps = DEIT3[size]
    suffix = '' if res == 224 else f'-{res}px'
    recipe = f'{"augmask-" if augmask else ""}{epochs}e'
    cfg = Config.fromfile(osp.join(
        CONFIG_DIR, 'deit3', f'deit3-{size}_32xb64-{recipe}_in1k{suffix}.py'))
    i = (400, 800).index(epochs)
    assert cfg.train_cfg.max_epochs == epochs
    assert cfg.optim_wrapper.optimizer == dict(type='Lamb', lr=lr,
                                               weight_decay=wds[i])
    assert cfg.train_dataloader.batch_size * 32 == \
        cfg.auto_scale_lr.base_batch_size == 2048
    assert cfg.model.head.loss == dict(type='BinaryCrossEntropyLoss')
    assert pipeline_types(cfg.model.train_cfg.augments) == ['Mixup', 'CutMix']
    train = cfg.train_dataloader.dataset.pipeline
    assert 'ThreeAugment' in pipeline_types(train)
    assert not {'RandAugment', 'RandomErasing'} & set(pipeline_types(train))
    assert train[1].scale == res
    assert cfg.val_dataloader.dataset.pipeline[2].crop_size == res
    assert cfg.train_dataloader.sampler.type == 'RepeatAugSampler'
    assert [h.type for h in cfg.custom_hooks] == ['EMAHook']
    assert cfg.model.backbone.img_size == res
    # Constant over depth.
    assert drop_path_rates(cfg) == [dps[i]] * len(drop_path_rates(cfg))


@pytest.mark.parametrize('size', ['base-p16', 'large-p16', 'huge-p14'])
def test_deit3_fine_tune_recipe(size):
    cfg = Config.fromfile(osp.join(CONFIG_DIR, 'deit3',
                                   f'deit3-{size}_32xb64-ft-20e_in1k.py'))
    assert cfg.train_cfg.max_epochs == 20
    assert cfg.optim_wrapper.optimizer.type == 'AdamW'
    assert cfg.optim_wrapper.optimizer.lr == 1e-5
    assert cfg.optim_wrapper.optimizer.weight_decay == 0.1
    assert cfg.model.head.loss.label_smooth_val == 0.1
    assert 'RandAugment' in pipeline_types(
        cfg.train_dataloader.dataset.pipeline)
    assert cfg.model.backbone.img_size == 224
    rates = drop_path_rates(cfg)
    assert rates == [rates[0]] * len(rates) and rates[0] > 0


@pytest.mark.parametrize('size,epochs,drop_path,layer_decay', [
    ('base-p16', 100, 0.1, 0.65), ('large-p16', 50, 0.2, 0.75),
    ('huge-p14', 50, 0.3, 0.75)])
def test_mae_fine_tune_recipe(size, epochs, drop_path, layer_decay):
    cfg = Config.fromfile(osp.join(
        CONFIG_DIR, 'mae', f'vit-{size}_8xb128-coslr-{epochs}e_in1k.py'))
    assert cfg.train_cfg.max_epochs == epochs
    assert cfg.model.backbone.drop_path_rate == drop_path
    assert cfg.model.backbone.out_type == 'avg_featmap'
    assert cfg.optim_wrapper.paramwise_cfg.layer_decay_rate == layer_decay
    assert cfg.model.head.loss.label_smooth_val == 0.1


@pytest.mark.parametrize('size,drop_path', [('tiny', 0.2), ('small', 0.3),
                                            ('base', 0.5)])
def test_swin_recipe(size, drop_path):
    cfg = Config.fromfile(osp.join(CONFIG_DIR, 'swin',
                                   f'swin-{size}_16xb64_in1k.py'))
    assert cfg.train_cfg.max_epochs == 300
    assert cfg.model.backbone.drop_path_rate == drop_path
    assert 16 * cfg.train_dataloader.batch_size == 1024
    # 5e-4 per 512 images.
    assert cfg.optim_wrapper.optimizer.lr == 1e-3
    assert cfg.optim_wrapper.optimizer.weight_decay == 0.05
    assert cfg.optim_wrapper.clip_grad.max_norm == 5.0


@pytest.mark.parametrize('depth', [50, 101, 152])
def test_resnet_rsb_a2_recipe(depth):
    cfg = Config.fromfile(osp.join(
        CONFIG_DIR, 'resnet', f'resnet{depth}_8xb256-rsb-a2-300e_in1k.py'))
    assert cfg.model.backbone.depth == depth
    assert cfg.model.backbone.drop_path_rate == 0.05
    assert cfg.model.head.loss.use_sigmoid is True
    optimizer = cfg.optim_wrapper.optimizer
    assert (optimizer.type, optimizer.lr, optimizer.weight_decay) == \
        ('Lamb', 5e-3, 0.02)
    assert [(a.type, a.alpha) for a in cfg.model.train_cfg.augments] == \
        [('Mixup', 0.1), ('CutMix', 1.0)]
    assert cfg.train_cfg.max_epochs == 300
    assert 8 * cfg.train_dataloader.batch_size == 2048
    assert cfg.train_dataloader.sampler.type == 'RepeatAugSampler'
    test = cfg.test_dataloader.dataset.pipeline
    assert (test[1].scale, test[2].crop_size) == (236, 224)  # crop 0.95


TIMM_AUGMASK = osp.join(CONFIG_DIR, 'timm',
                        'vit-small-p16-timm_4xb256-augmask-ft-100e_in1k.py')


def test_timm_fine_tune_is_its_baseline_plus_the_four_lines():
    cfg = Config.fromfile(TIMM_AUGMASK)
    base = Config.fromfile(baseline_of(TIMM_AUGMASK))
    assert cfg.custom_imports == SWITCH['custom_imports']
    assert (cfg.model.type, base.model.type) == ('AugSubClassifier',
                                                 'TimmClassifier')
    assert cfg.model.augsub == SWITCH['augsub']
    assert cfg.model_wrapper_cfg.type == SWITCH['wrapper']
    assert cfg.randomness.diff_rank_seed is True
    assert without_switch(cfg) == without_switch(base)
    # The recipe: timm's ViT-S/16 from a local checkpoint, the zoo's DeiT-S
    # pipeline and optimizer at the fine-tuning lr.
    assert 'deit/deit-small_4xb256_in1k.py' in \
        zoo_bases(baseline_of(TIMM_AUGMASK))
    assert (base.model.model_name, base.model.pretrained,
            base.model.checkpoint_path, base.model.drop_path_rate) == \
        ('vit_small_patch16_224', False, '', 0.1)
    assert 'backbone' not in base.model and 'head' not in base.model
    assert [(a.type, a.alpha) for a in base.model.train_cfg.augments] == \
        [('Mixup', 0.8), ('CutMix', 1.0)]
    assert (base.optim_wrapper.optimizer.type,
            base.optim_wrapper.optimizer.lr) == ('AdamW', 5e-4)
    # Layer-wise lr decay through timm's layer grouping (the baseline
    # imports augsub_mm for this constructor only).
    assert (base.optim_wrapper.constructor,
            base.optim_wrapper.paramwise_cfg.layer_decay_rate) == \
        ('TimmLayerDecayOptimWrapperConstructor', 0.75)
    assert base.custom_imports.imports == ['augsub_mm']
    assert base.train_cfg.max_epochs == 100
    assert 4 * base.train_dataloader.batch_size == 1024
    model = build_model(cfg)
    assert type(model).__name__ == 'AugSubTimmClassifier'
    assert model.augsub.describe(model.backbone) == 'token drop'


# -- a few iterations of each family in the Runner ----------------------
TINY = {
    'DeiT3': (dict(arch=dict(embed_dims=32, num_layers=2, num_heads=2,
                             feedforward_channels=64)), 32),
    'VisionTransformer': (dict(arch=dict(embed_dims=32, num_layers=2,
                                         num_heads=2,
                                         feedforward_channels=64),
                               init_cfg=None), 32),
    'SwinTransformer': (dict(arch=dict(embed_dims=16, depths=[1, 1, 1, 1],
                                       num_heads=[1, 1, 1, 1])), 128),
    'ResNet': (dict(depth=18, stem_channels=8, base_channels=8), 64),
}


def tiny_version(path: str, data_root: str, work_dir: str) -> Config:
    """``path`` with a tiny architecture of the same family, 4 classes of
    images in ``data_root``, one short epoch; the recipe (pipelines,
    optimizer, warm-up, hooks, sub-model) unchanged."""
    cfg = Config.fromfile(path)
    backbone, channels = TINY[cfg.model.backbone.type]
    cfg.model.backbone.update(backbone)
    cfg.model.head.update(num_classes=4, in_channels=channels)
    cfg.data_preprocessor.num_classes = 4
    for split in ('train', 'val', 'test'):
        loader = cfg[f'{split}_dataloader']
        loader.update(batch_size=4, num_workers=0, persistent_workers=False)
        loader.dataset = dict(type='CustomDataset', data_root=data_root,
                              pipeline=loader.dataset.pipeline)
    cfg.val_evaluator = cfg.test_evaluator = dict(type='Accuracy', topk=1)
    cfg.train_cfg = dict(by_epoch=True, max_epochs=1, val_interval=1)
    # Schedulers that start after the first epoch (cosine after warm-up)
    # would end before they begin.
    cfg.param_scheduler = [s for s in cfg.param_scheduler
                           if s.get('begin', 0) < 1]
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=1)
    cfg.work_dir = work_dir
    cfg.load_from = None
    return cfg


@pytest.fixture(scope='module')
def eight_images(tmp_path_factory):
    return make_image_folder(str(tmp_path_factory.mktemp('eight')),
                             per_class=2)


@pytest.mark.parametrize('name', [
    'deit3/deit3-small-p16_32xb64-augmask-400e_in1k.py',
    'deit3/deit3-huge-p14_32xb64-augmask-400e_in1k-160px.py',
    'deit3/deit3-base-p16_32xb64-augmask-ft-20e_in1k.py',
    'mae/vit-base-p16_8xb128-augmask-coslr-100e_in1k.py',
    'swin/swin-tiny_16xb64-augmask_in1k.py',
    'resnet/resnet50_8xb256-augmask-rsb-a2-300e_in1k.py',
])
def test_tiny_version_trains_in_the_runner(name, eight_images, tmp_path):
    cfg = tiny_version(osp.join(CONFIG_DIR, name), eight_images,
                       str(tmp_path))
    runner = Runner.from_cfg(cfg)
    model = runner.model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    runner.train()
    hub = runner.message_hub
    assert runner.iter == 2
    for key in ('train/loss', 'train/loss_sub'):
        assert torch.isfinite(torch.tensor(hub.get_scalar(key).current()))
    assert 'val/accuracy/top1' in hub.log_scalars
    changed = [k for k, v in model.state_dict().items()
               if v.is_floating_point() and not torch.equal(v, before[k])]
    assert any(k.startswith('backbone.') for k in changed)
    token = getattr(model.augsub, 'mask_token', None)
    if token is not None:
        assert 'augsub.mask_token' in changed
        group = next(g for g in runner.optim_wrapper.optimizer.param_groups
                     if any(p is token for p in g['params']))
        assert group['weight_decay'] == 0.


# -- docs/model_zoo.md --------------------------------------------------
def metafile_top1():
    """{zoo config: the ImageNet-1k top-1 values of its metafile entries}."""
    import mmpretrain
    import yaml
    mim = osp.join(osp.dirname(mmpretrain.__file__), '.mim')
    found = {}
    with open(osp.join(mim, 'model-index.yml')) as f:
        imports = yaml.safe_load(f)['Import']
    for path in imports:
        with open(osp.join(mim, path)) as f:
            models = yaml.safe_load(f).get('Models', [])
        for model in models:
            for result in model.get('Results') or []:
                if result.get('Dataset') == 'ImageNet-1k':
                    found.setdefault(model['Config'], set()).add(
                        result['Metrics'].get('Top 1 Accuracy'))
    return found


def test_model_zoo_table_matches_configs_and_metafiles():
    with open(osp.join(REPO, 'docs', 'model_zoo.md')) as f:
        rows = [line for line in f if re.match(r'\| `\w+/', line)]
    top1 = metafile_top1()
    seen = set()
    for row in rows:
        ours, zoo, value = re.match(
            r'\| `([^`]+)`.*?\| `([^`]+)`.*?\| ([\d.]+) \|', row).groups()
        path = osp.join(CONFIG_DIR, ours)
        assert path in AUGMASK_CONFIGS and baseline_of(path) in ALL_CONFIGS
        assert float(value) in top1[f'configs/{zoo}'], row
        seen.add(path)
    # Every pre-training / training AugMask config is in the table.
    assert seen == {p for p in AUGMASK_CONFIGS if '-ft-' not in p}
