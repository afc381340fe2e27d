"""metafile.yml / model-index.yml (OpenMMLab format): every config under
configs/ is listed, and the generator reads its fields from the configs."""
import glob
import json
import os
import os.path as osp
import sys

import yaml
from conftest import REPO

sys.path.insert(0, osp.join(REPO, 'tools', 'misc'))
import gen_metafile  # noqa: E402

# The demo's configs are a walkthrough, not models of the zoo.
NOT_LISTED = ('demo', )


def load(name):
    with open(osp.join(REPO, name)) as f:
        return yaml.safe_load(f)


def test_every_config_is_listed():
    assert load('model-index.yml') == {'Import': ['metafile.yml']}
    meta = load('metafile.yml')
    assert [c['Name'] for c in meta['Collections']] == ['AugSub']
    listed = [m['Config'] for m in meta['Models']]
    assert len(listed) == len(set(listed))
    assert len({m['Name'] for m in meta['Models']}) == len(listed)
    on_disk = set()
    for path in glob.glob(osp.join(REPO, 'configs', '**', '*.py'),
                          recursive=True):
        rel = osp.relpath(path, REPO).replace(os.sep, '/')
        parts = rel.split('/')
        if '_base_' not in parts and parts[1] not in NOT_LISTED:
            on_disk.add(rel)
    missing = sorted(on_disk - set(listed))
    assert not missing, ('configs missing from metafile.yml (run python '
                         f'tools/misc/gen_metafile.py): {missing}')
    stale = sorted(set(listed) - on_disk)
    assert not stale, f'metafile.yml lists configs that are gone: {stale}'
    for model in meta['Models']:
        assert model['In Collection'] == 'AugSub'
        assert model['Metadata']['Training Data']
        assert model['Metadata']['Sub-model']


def test_generator_reads_configs_and_study_results(tmp_path):
    configs = tmp_path / 'configs'
    (configs / 'toy' / '_base_').mkdir(parents=True)
    (configs / 'demo').mkdir()
    fashion = osp.join(REPO, 'configs', 'fashion_mnist')
    base = 'vit-tiny-p4_1xb64_fashion-mnist-2k.py'
    for name in (base, 'vit-tiny-p4_1xb64-augmask_fashion-mnist-2k.py',
                 'vit-tiny-p4_1xb64-masked-r0.75_fashion-mnist-2k.py'):
        (configs / 'toy' / name).write_text(
            open(osp.join(fashion, name)).read().replace(
                "'./_base_/", repr(osp.join(fashion, '_base_', ''))[:-1]))
    (configs / 'toy' / '_base_' / 'ignored.py').write_text('x = 1\n')
    (configs / 'demo' / 'ignored.py').write_text('x = 1\n')
    rel = osp.relpath(str(configs / 'toy' / base), gen_metafile.REPO)
    runs = tmp_path / 'results' / 'runs'
    runs.mkdir(parents=True)
    for seed, top1 in enumerate((80.0, 82.0)):
        (runs / f'vit_baseline_seed{seed}.json').write_text(
            json.dumps(dict(config=rel, top1=top1)))
    # A second regime's records live in a folder of their own.
    heavy = tmp_path / 'results' / 'heavy' / 'runs'
    heavy.mkdir(parents=True)
    rel_augmask = osp.relpath(
        str(configs / 'toy' / 'vit-tiny-p4_1xb64-augmask_fashion-mnist-2k.py'),
        gen_metafile.REPO)
    (heavy / 'vit_augmask_seed0.json').write_text(
        json.dumps(dict(config=rel_augmask, top1=84.0)))

    meta = gen_metafile.generate(str(configs), str(tmp_path / 'results'))
    models = {m['Name']: m for m in meta['Models']}
    assert sorted(models) == [
        'vit-tiny-p4_1xb64-augmask_fashion-mnist-2k',
        'vit-tiny-p4_1xb64-masked-r0.75_fashion-mnist-2k',
        'vit-tiny-p4_1xb64_fashion-mnist-2k']
    plain = models['vit-tiny-p4_1xb64_fashion-mnist-2k']
    meta_plain = plain['Metadata']
    assert meta_plain['Training Data'] == 'Fashion-MNIST'
    assert meta_plain['Architecture'] == ['VisionTransformer']
    assert meta_plain['Sub-model'] == 'none (baseline)'
    from mmengine.config import Config
    cfg = Config.fromfile(osp.join(fashion, base))
    # 1xb<N>: one GPU.
    assert meta_plain['Batch Size'] == cfg.train_dataloader.batch_size
    assert meta_plain['Epochs'] == cfg.train_cfg.max_epochs
    assert plain['Results'] == [dict(
        Dataset='Fashion-MNIST', Task='Image Classification',
        Metrics={'Top 1 Accuracy': 81.0, 'Seeds': 2,
                 'Top 1 Accuracy Std': 1.41})]
    augmask = models['vit-tiny-p4_1xb64-augmask_fashion-mnist-2k']
    assert augmask['Metadata']['Sub-model'] == 'AugMask 0.5'
    # One seed: no std.
    assert augmask['Results'] == [dict(
        Dataset='Fashion-MNIST', Task='Image Classification',
        Metrics={'Top 1 Accuracy': 84.0, 'Seeds': 1})]
    masked = models['vit-tiny-p4_1xb64-masked-r0.75_fashion-mnist-2k']
    assert 'Results' not in masked
    assert masked['Metadata']['Sub-model'].startswith(
        'none (masked training, AugMask 0.75')
