"""A run's best top-1 next to the model zoo's and the paper's numbers.

For the run in ``WORK_DIR`` this prints (and with ``--out`` writes) a
markdown table with:

- the run's best validation top-1 (from mmengine's json log);
- the model-zoo result of the MMPretrain config it inherits, read from the
  installed mmpretrain's ``model-index.yml``; when the config inherits only
  mmpretrain's ``_base_`` files (a recipe written from scratch), the zoo
  configs that share its model definition;
- the baseline and + AugMask top-1 reported by `Augmenting Sub-model to
  Improve Main Model <https://arxiv.org/abs/2306.11339>`_ for that model
  and recipe.

Example::

    python tools/analysis_tools/zoo_compare.py \\
        work_dirs/resnet50_8xb256-augmask-rsb-a2-300e_in1k
"""
import argparse
import ast
import glob
import os.path as osp
import sys
from collections import deque
from typing import Dict, List, Optional, Tuple

from augsub_mm.config import resolve_config

HERE = osp.dirname(osp.abspath(__file__))
REPO = osp.dirname(osp.dirname(HERE))
sys.path.insert(0, HERE)

from compare_runs import read_log  # noqa: E402

PAPER_URL = 'https://arxiv.org/abs/2306.11339'
# ImageNet-1k top-1 of the paper (baseline, + AugMask 0.5), by model and
# recipe: (family, size) -> [(recipe, epochs, baseline, augmask)].
PAPER = {
    ('DeiT3', 'small'): [('DeiT-III ViT-S/16, 400 ep', 400, 80.4, 81.1),
                         ('DeiT-III ViT-S/16, 800 ep', 800, 81.4, 81.7)],
    ('DeiT3', 'base'): [('DeiT-III ViT-B/16, 400 ep', 400, 83.5, 84.1),
                        ('DeiT-III ViT-B/16, 800 ep', 800, 83.8, 84.2)],
    ('DeiT3', 'large'): [('DeiT-III ViT-L/16, 400 ep', 400, 84.5, 85.2),
                         ('DeiT-III ViT-L/16, 800 ep', 800, 84.9, 85.3)],
    ('DeiT3', 'huge'): [('DeiT-III ViT-H/14, 400 ep', 400, 85.1, 85.7),
                        ('DeiT-III ViT-H/14, 800 ep', 800, 85.2, 85.7)],
    ('VisionTransformer', 'base'): [
        ('MAE fine-tune ViT-B/16, 100 ep', 100, 83.6, 83.9)],
    ('VisionTransformer', 'large'): [
        ('MAE fine-tune ViT-L/16, 50 ep', 50, 85.9, 86.1)],
    ('VisionTransformer', 'huge'): [
        ('MAE fine-tune ViT-H/14, 50 ep', 50, 86.9, 87.2)],
    ('SwinTransformer', 'tiny'): [('Swin-T, 300 ep', 300, 81.3, 81.4)],
    ('SwinTransformer', 'small'): [('Swin-S, 300 ep', 300, 83.0, 83.4)],
    ('SwinTransformer', 'base'): [('Swin-B, 300 ep', 300, 83.5, 83.9)],
    ('ResNet', 50): [('ResNet-50, RSB-A2-like, 300 ep', 300, 79.7, 80.0)],
    ('ResNet', 101): [('ResNet-101, RSB-A2-like, 300 ep', 300, 81.4, 82.1)],
    ('ResNet', 152): [('ResNet-152, RSB-A2-like, 300 ep', 300, 81.8, 82.8)],
}
ARCH_ALIASES = dict(s='small', b='base', l='large', h='huge', t='tiny',
                    deit3_s='small', deit3_b='base', deit3_l='large',
                    deit3_h='huge')


def mmpretrain_root() -> str:
    """The installed mmpretrain's ``.mim`` folder (configs, model index)."""
    import mmpretrain
    return osp.join(osp.dirname(mmpretrain.__file__), '.mim')


def model_key(backbone: dict) -> Optional[Tuple[str, object]]:
    """(backbone type, size) of a backbone config, e.g. ('DeiT3',
    'small') or ('ResNet', 101); None for custom architectures."""
    kind = backbone.get('type')
    if kind == 'ResNet':
        return kind, backbone.get('depth')
    arch = backbone.get('arch')
    if not isinstance(arch, str):
        return None
    return kind, ARCH_ALIASES.get(arch.lower(), arch.lower())


def base_files(path: str) -> List[str]:
    """The ``_base_`` files of an (old-style) config, as paths."""
    with open(path) as f:
        tree = ast.parse(f.read())
    bases = []
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
                getattr(t, 'id', None) == '_base_' for t in node.targets):
            value = ast.literal_eval(node.value)
            bases = [value] if isinstance(value, str) else list(value)
    return [resolve_base(b, path) for b in bases]


def resolve_base(base: str, child: str) -> str:
    if '::' in base:  # a model-zoo file, e.g. mmpretrain::deit3/...
        return resolve_config(base)
    return osp.normpath(osp.join(osp.dirname(child), base))


def zoo_key(path: str) -> Optional[str]:
    """``configs/...`` path of a file inside mmpretrain's configs."""
    root = osp.join(mmpretrain_root(), '')
    path = osp.normpath(path)
    return osp.relpath(path, root) if path.startswith(root) else None


def load_model_index() -> Dict[str, List[dict]]:
    """Model-zoo entries of the installed mmpretrain, by config path."""
    import yaml
    root = mmpretrain_root()
    with open(osp.join(root, 'model-index.yml')) as f:
        imports = yaml.safe_load(f)['Import']
    by_config = {}
    for metafile in imports:
        with open(osp.join(root, metafile)) as f:
            for model in yaml.safe_load(f).get('Models') or []:
                if model.get('Config'):
                    by_config.setdefault(model['Config'], []).append(model)
    return by_config


def imagenet_top1(entry: dict) -> Optional[float]:
    for result in entry.get('Results') or []:
        if result.get('Dataset') == 'ImageNet-1k' and \
                result.get('Task') == 'Image Classification':
            return result['Metrics'].get('Top 1 Accuracy')
    return None


def zoo_entries(config: str, index: Dict[str, List[dict]]
                ) -> Tuple[List[dict], str]:
    """Model-zoo entries for ``config`` and how they were found.

    The nearest config in its inheritance chain that is in the model index;
    otherwise the indexed configs that inherit one of the same mmpretrain
    ``_base_`` model files. Entries pre-trained on ImageNet-21k are left
    out: the paper's recipes train on ImageNet-1k only.
    """
    queue, seen, models = deque([config]), set(), []
    while queue:
        path = queue.popleft()
        if path in seen or not osp.isfile(path):
            continue
        seen.add(path)
        key = zoo_key(path)
        if key in index and path != config:
            return _in1k(index[key]), 'inherited'
        if key and key.startswith(osp.join('configs', '_base_', 'models')):
            models.append(key)
        queue.extend(base_files(path))
    for model in models:
        sharing = [entry for cfg, entries in index.items()
                   for entry in entries
                   if model in {zoo_key(b) for b in base_files(
                       osp.join(mmpretrain_root(), cfg))}]
        if sharing:
            return _in1k(sharing), f'not inherited; shares {model}'
    return [], 'no model-zoo config in its inheritance'


def _in1k(entries: List[dict]) -> List[dict]:
    return [e for e in entries if 'in21k' not in e['Name']
            and imagenet_top1(e) is not None]


def paper_rows(model: dict, epochs: Optional[int]) -> List[tuple]:
    """The paper's (recipe, baseline, + AugMask) for the run's model: those
    of the run's epoch count when the paper has it, else all."""
    rows = PAPER.get(model_key(model.get('backbone', {})), [])
    same = [r for r in rows if r[1] == epochs]
    return [(r[0], r[2], r[3]) for r in same or rows]


def find_config(work_dir: str, config: Optional[str]) -> Tuple[str, str]:
    """(source config with its ``_base_`` chain, dumped config) of a run."""
    dumped = sorted(glob.glob(osp.join(work_dir, '*.py')))
    if config:
        return config, dumped[0] if dumped else config
    if not dumped:
        raise FileNotFoundError(
            f'{work_dir} holds no dumped config (the Runner writes '
            'WORK_DIR/<config name>.py); pass --config.')
    name = osp.basename(dumped[0])
    sources = glob.glob(osp.join(REPO, 'configs', '**', name),
                        recursive=True)
    return (sources[0] if sources else dumped[0]), dumped[0]


def compare(work_dir: str, config: Optional[str] = None) -> str:
    """The comparison table of the run in ``work_dir`` (markdown)."""
    from mmengine.config import Config
    source, dumped = find_config(work_dir, config)
    cfg = Config.fromfile(dumped, import_custom_modules=False)
    log = read_log(work_dir)
    if not log['top1']:
        raise ValueError(f'{work_dir} has no validation top-1 in its log.')
    best = max(log['top1'])
    epoch = log['val_epoch'][log['top1'].index(best)]
    dataset = cfg.get('val_dataloader', {}).get('dataset', {}).get('type')
    entries, how = zoo_entries(source, load_model_index())
    model = cfg.get('model', {})
    rows = [('this run: best validation top-1', f'{best:.2f}',
             f'epoch {epoch}, {osp.basename(osp.normpath(work_dir))}')]
    run_key = model_key(model.get('backbone', {}))
    for entry in entries:
        zoo_cfg = Config.fromfile(osp.join(mmpretrain_root(),
                                           entry['Config']))
        zoo_key_ = model_key(zoo_cfg.model.get('backbone', {}))
        note = f"{entry['Config']} ({how})"
        if zoo_key_ != run_key:
            note += f'; different backbone: {zoo_key_} vs {run_key}'
        rows.append((f"model zoo: {entry['Name']}",
                     f'{imagenet_top1(entry):.2f}', note))
    if not entries:
        rows.append(('model zoo', 'n/a', how))
    epochs = cfg.get('train_cfg', {}).get('max_epochs')
    papers = paper_rows(model, epochs)
    for recipe, base, augmask in papers:
        rows.append((f'paper: {recipe}, baseline', f'{base:.1f}', PAPER_URL))
        rows.append((f'paper: {recipe}, + AugMask', f'{augmask:.1f}',
                     PAPER_URL))
    if not papers:
        rows.append(('paper', 'n/a', f'no paper number for {run_key}'))
    lines = ['| | top-1 % | source |', '|---|---|---|']
    lines += [f'| {a} | {b} | {c} |' for a, b, c in rows]
    if dataset != 'ImageNet':
        lines.append(f'\nNote: this run validates on {dataset}; the model-zoo'
                     ' and paper numbers are ImageNet-1k top-1.')
    return '\n'.join(lines) + '\n'


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Show a run\'s best top-1 next to the model-zoo result '
        'of the config it inherits and the AugSub paper\'s numbers.')
    parser.add_argument('work_dir', help='work dir of a training run')
    parser.add_argument('--config', help='the run\'s source config (default:'
                        ' the file of configs/ named like the dumped config '
                        'in WORK_DIR)')
    parser.add_argument('--out', help='also write the table to this file')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    table = compare(args.work_dir, args.config)
    print(table)
    if args.out:
        with open(args.out, 'w') as f:
            f.write(table)


if __name__ == '__main__':
    main()
