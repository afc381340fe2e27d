"""Generate ``metafile.yml`` and ``model-index.yml`` (OpenMMLab format).

Scans ``configs/`` (all but ``_base_`` folders and ``configs/demo``) and
writes one model entry per config: training data, epochs, total batch
size, backbone and sub-model, read from the config itself. Results are
only those measured here: the Fashion-MNIST study's per-run records in
``results/fashion_mnist/runs`` and, for the heavy-augmentation regime,
``results/fashion_mnist/heavy/runs`` (mean and std over seeds; a ratio of
the AugDrop sweep that was not chosen has one seed). The ImageNet
configs have no results of ours; tools/analysis_tools/zoo_compare.py shows
the paper's and the model zoo's numbers next to a run.

Re-run it after adding configs::

    python tools/misc/gen_metafile.py
"""
import argparse
import glob
import json
import os.path as osp
import re
import statistics
from typing import Dict, List

import yaml

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
EXCLUDED = ('demo', )
DATASETS = dict(ImageNet='ImageNet-1k', FashionMNIST='Fashion-MNIST')
COLLECTION = dict(
    Name='AugSub',
    Metadata=dict(**{'Training Techniques': ['AugMask', 'AugDrop',
                                             'AugPath']}),
    Paper=dict(URL='https://arxiv.org/abs/2306.11339',
               Title='Augmenting Sub-model to Improve Main Model'),
    README='README.md',
    Code=dict(URL='augsub_mm/models/classifiers/augsub_classifier.py'))


def find_configs(config_root: str) -> List[str]:
    """Config files under ``config_root``, sorted, without ``_base_`` and
    the excluded folders."""
    paths = glob.glob(osp.join(config_root, '**', '*.py'), recursive=True)
    keep = []
    for path in sorted(paths):
        parts = osp.relpath(path, config_root).split(osp.sep)
        if '_base_' in parts or parts[0] in EXCLUDED:
            continue
        keep.append(path)
    return keep


def sub_model(model: dict) -> str:
    """What trains the model beside its recipe, in words."""
    if model.get('type') == 'AugSubClassifier':
        augsub = model['augsub']
        return f"{augsub['type']} {augsub.get('ratio', 0.5)}"
    if model.get('type') == 'MaskedMainClassifier':
        return (f"none (masked training, {model['mask']['type']} "
                f"{model['mask'].get('ratio', 0.5)} in the main pass)")
    return 'none (baseline)'


def study_results(results_root: str) -> Dict[str, dict]:
    """Mean/std top-1 over seeds of the study's runs, by config path: the
    records in ``results_root/runs`` and in each regime's folder below it
    (``results_root/<regime>/runs``)."""
    by_config = {}
    paths = sorted(glob.glob(osp.join(results_root, 'runs', '*.json')) +
                   glob.glob(osp.join(results_root, '*', 'runs', '*.json')))
    for path in paths:
        with open(path) as f:
            record = json.load(f)
        by_config.setdefault(record['config'], []).append(record['top1'])
    out = {}
    for config, top1 in by_config.items():
        metrics = {'Top 1 Accuracy': round(statistics.mean(top1), 2),
                   'Seeds': len(top1)}
        if len(top1) > 1:
            metrics['Top 1 Accuracy Std'] = round(statistics.stdev(top1), 2)
        out[config] = dict(Dataset='Fashion-MNIST',
                           Task='Image Classification', Metrics=metrics)
    return out


def model_entry(path: str, results: Dict[str, dict]) -> dict:
    """The metafile entry of one config."""
    from mmengine.config import Config
    cfg = Config.fromfile(path, import_custom_modules=False)
    rel = osp.relpath(path, REPO).replace(osp.sep, '/')
    name = osp.splitext(osp.basename(path))[0]
    loader = cfg.get('train_dataloader', {})
    dataset = loader.get('dataset', {}).get('type')
    metadata = {'Training Data': DATASETS.get(dataset, dataset)}
    epochs = cfg.get('train_cfg', {}).get('max_epochs')
    if epochs:
        metadata['Epochs'] = epochs
    gpus = re.search(r'_(\d+)xb(\d+)', name)
    if gpus and loader.get('batch_size'):
        metadata['Batch Size'] = int(gpus.group(1)) * loader['batch_size']
    # An mmpretrain backbone's type, or a timm model's name (TimmClassifier).
    backbone = cfg.model.get('backbone')
    metadata['Architecture'] = [backbone['type'] if backbone else
                                cfg.model['model_name']]
    metadata['Sub-model'] = sub_model(cfg.model)
    entry = {'Name': name, 'In Collection': COLLECTION['Name'],
             'Metadata': metadata}
    if rel in results:
        entry['Results'] = [results[rel]]
    entry['Config'] = rel
    return entry


def generate(config_root: str, results_root: str) -> dict:
    results = study_results(results_root)
    return dict(Collections=[COLLECTION],
                Models=[model_entry(p, results)
                        for p in find_configs(config_root)])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--configs', default=osp.join(REPO, 'configs'))
    parser.add_argument('--results', default=osp.join(
        REPO, 'results', 'fashion_mnist'))
    parser.add_argument('--out-dir', default=REPO)
    args = parser.parse_args(argv)
    meta = generate(args.configs, args.results)
    header = ('# Generated by tools/misc/gen_metafile.py: edit the configs, '
              'not this.\n')
    with open(osp.join(args.out_dir, 'metafile.yml'), 'w') as f:
        f.write(header + yaml.safe_dump(meta, sort_keys=False, width=79))
    with open(osp.join(args.out_dir, 'model-index.yml'), 'w') as f:
        f.write(header + yaml.safe_dump({'Import': ['metafile.yml']}))
    print(f"{len(meta['Models'])} configs in "
          f"{osp.join(args.out_dir, 'metafile.yml')}")


if __name__ == '__main__':
    main()
