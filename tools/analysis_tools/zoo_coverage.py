"""Which sub-model trains on which backbone of the installed MMPretrain zoo.

For every backbone family of the installed mmpretrain's classification
configs (``<mmpretrain>/.mim/configs``, models of type ``ImageClassifier``
with a head), this takes one config (the cheapest by its name; ``--all``:
every config), builds its model, and runs ONE real training step through
``train_step`` -- the Runner's path: data preprocessor (the recipe's
Mixup/CutMix), forward, backward, optimizer step -- for the plain classifier
and for each sub-model (AugMask, AugDrop, AugPath at ``--ratio``), on a
batch of random images at a reduced size (``--size``, falling back to the
config's own crop size when the network needs it). It prints the matrix
family x sub-model:

- ``exact: <form>``: the step trained; ``<form>`` is what the sub-model did
  (token drop, mask token, input masking, dropout (N layers), drop-path (N
  slots)). A sub pass that changed nothing is refused by the plugin itself
  at its first step, so it cannot show up here as exact.
- ``refused: <reason>``: augsub_mm refused the combination, with the
  reason (the method's own limits).
- ``zoo config does not train``: the plain classifier's step fails too
  (mmpretrain's own problem); the sub-models are not tried.
- ``FAILED: <error>``: anything else, i.e. a bug (exit status 1).

``--tiny`` runs every family's tiny version instead (``zoo_tiny.py``: the
same backbone class and kinds of blocks at 8-32 channels, a block or two
per stage, 64 px): the whole zoo in about a minute, for CI. A family of the
installed mmpretrain without a tiny version is an error.

Examples::

    python tools/analysis_tools/zoo_coverage.py                 # one config per family
    python tools/analysis_tools/zoo_coverage.py --families ResNet ViTEVA02
    python tools/analysis_tools/zoo_coverage.py --tiny          # CI: all, tiny
    python tools/analysis_tools/zoo_coverage.py --all --out coverage.md
    python tools/analysis_tools/zoo_coverage.py --readme README.md
"""
import argparse
import contextlib
import glob
import json
import math
import os.path as osp
import re
import sys
import time
import traceback
import warnings
from collections import defaultdict
from typing import Dict, List, Optional

HERE = osp.dirname(osp.abspath(__file__))
sys.path.insert(0, osp.dirname(HERE))

import upstream_warnings  # noqa: E402,F401  quiet upstream imports
import zoo_tiny  # noqa: E402

SUB_MODELS = ('AugMask', 'AugDrop', 'AugPath')
BEGIN = ('<!-- zoo-coverage:begin (written by '
         'tools/analysis_tools/zoo_coverage.py) -->')
END = '<!-- zoo-coverage:end -->'
# Name words that say a config is cheap (earlier = cheaper), and words that
# make a config a poor representative (deploy-mode re-parametrized models,
# large inputs, headless feature extractors are filtered out before).
SIZE_WORDS = ('xxs', 'xs', 'tiny', 't', 'mini', 's0', 's12', 's', 'small',
              '11m', 'a0', 'b0', 'l1', '128s', '128', '18', 'm', 'medium')
PENALTIES = ('deploy', '384', '448', '512', 'in21k', '21k', 'large', 'huge',
             'giant')


def zoo_root() -> str:
    import mmpretrain
    return osp.join(osp.dirname(mmpretrain.__file__), '.mim', 'configs')


def cost_key(path: str):
    """Sort key: configs whose name says cheap first."""
    name = osp.basename(path).lower()
    words = re.split(r'[-_.]', name)
    # The folder too: deploy/ holds re-parametrized (inference) configs.
    penalty = sum(p in path.lower() for p in PENALTIES)
    rank = min((SIZE_WORDS.index(w) for w in words if w in SIZE_WORDS),
               default=len(SIZE_WORDS))
    return penalty, rank, len(name), name


def classifier_configs(root: str) -> Dict[str, List[str]]:
    """Backbone type -> the zoo's classification configs that use it."""
    from mmengine.config import Config
    found = defaultdict(list)
    paths = glob.glob(osp.join(root, '*', '*.py')) + \
        glob.glob(osp.join(root, '*', '*', '*.py'))
    for path in sorted(paths):
        if '_base_' in path.split(osp.sep):
            continue
        try:
            cfg = Config.fromfile(path)
        except Exception:  # configs of other codebases (mmdet, ...)
            continue
        model = cfg.get('model') or {}
        if model.get('type') != 'ImageClassifier' or not model.get('head') \
                or not isinstance(model.get('backbone'), dict):
            continue
        found[model['backbone']['type']].append(path)
    return {k: sorted(v, key=cost_key) for k, v in found.items()}


def crop_size(cfg) -> int:
    """The config's training crop size (224 when it says none)."""
    for step in cfg.get('train_pipeline') or cfg.get(
            'train_dataloader', {}).get('dataset', {}).get('pipeline', []):
        scale = step.get('scale') or step.get('crop_size')
        if step.get('type') in ('RandomResizedCrop', 'RandomCrop',
                                'EfficientNetRandomCrop', 'Resize') and scale:
            return scale if isinstance(scale, int) else scale[0]
    return 224


def one_step(model_cfg: dict, size: int, batch: int) -> str:
    """Build ``model_cfg`` and run one training step; returns the form the
    sub-model took (``''`` for the plain classifier)."""
    import torch
    from mmengine.optim import OptimWrapper
    from mmpretrain.registry import MODELS
    from mmpretrain.structures import DataSample
    torch.manual_seed(0)
    model = MODELS.build(model_cfg)
    model.train()
    # ImageClassifier's head, or TimmClassifier's timm model (no head).
    head = model.head if hasattr(model, 'head') else \
        getattr(model, 'model', None)
    num_classes = getattr(head, 'num_classes', 10)
    mean = getattr(model.data_preprocessor, 'mean', None)
    channels = mean.shape[0] if isinstance(mean, torch.Tensor) else 3
    data = dict(
        inputs=[torch.randint(0, 256, (channels, size, size),
                              dtype=torch.uint8)
                for _ in range(batch)],
        data_samples=[DataSample().set_gt_label(i % num_classes)
                      for i in range(batch)])
    params = [p for p in model.parameters() if p.requires_grad]
    optim = OptimWrapper(torch.optim.SGD(params, lr=1e-3))
    losses = model.train_step(data, optim)
    for name, value in losses.items():
        if not torch.isfinite(value).all():
            raise FloatingPointError(f'{name} is {value}')
    augsub = getattr(model, 'augsub', None)
    if augsub is None:
        return ''
    form = augsub.describe(model.backbone)
    if type(augsub).__name__ == 'AugDrop':
        worst = dropout_per_path(model, data)
        form += f', at most {worst:.2f} of a path dropped'
    return form


# Autograd nodes whose outputs mix many input elements (matrix products,
# convolutions, norms, softmax, reductions, pooling): a dropout mask ends
# there. Nodes of custom autograd functions (no digit at the end of the
# name) end a path too: what they do is unknown here.
MIXING_NODE = re.compile(r'Mm|Bmm|Conv|Norm|Softmax|Mean|Sum|Pool|Attention|'
                         r'Embedding|Upsample|Cumsum|Var|Std|Prod|Max|Min|'
                         r'Linear|Einsum|Backward$', re.IGNORECASE)


def dropout_per_path(model, data, tolerance: float = 0.08) -> float:
    """The largest fraction of an activation that the dropouts of one sub
    pass drop in series, measured, independently of the plugin's own
    bookkeeping: every ``nn.Dropout`` module of the backbone drops a
    fraction of the nonzero values it receives (read off its input and
    output); modules in series are found by walking the autograd graph
    back from each one's input through elementwise nodes to the output of
    another; along each such path the kept fractions multiply. Raises an
    AssertionError when a path drops more than the sub-model's ratio (plus
    ``tolerance``, or 4 standard deviations of the dropped fraction of a
    dropout of few values, for sampling): dropouts in series."""
    import torch
    import torch.nn as nn
    ratio = model.augsub.ratio
    seen = {}

    def record(module, args, out):
        if module.training:
            seen[module] = (args[0].detach(), out.detach(),
                            args[0].grad_fn, out.grad_fn)

    handles = [m.register_forward_hook(record)
               for m in model.backbone.modules() if isinstance(m, nn.Dropout)]
    inputs = model.data_preprocessor(data, True)['inputs']
    try:
        # The whole backbone (a timm model: its head's dropouts too).
        with model.sub_pass(12345, inputs.device):
            model.backbone(inputs)
    finally:
        for h in handles:
            h.remove()
    dropped, counts = {}, {}
    for module, (x, y, _, _) in seen.items():
        alive = x != 0
        counts[module] = int(alive.sum())
        dropped[module] = float(((y == 0) & alive).sum() /
                                alive.sum().clamp(min=1))
    by_node, by_memory = {}, {}
    for module, (_, y, _, node) in seen.items():
        if dropped[module] > 0:
            if node is not None:
                by_node.setdefault(node, []).append(module)
            by_memory.setdefault((y.data_ptr(), y.shape), []).append(module)

    def upstream(module):
        # Without autograd (reversible layers, checkpointed blocks), only
        # an input that is another's output itself is seen.
        x, _, node, _ = seen[module]
        return by_memory.get((x.data_ptr(), x.shape), []) + \
            upstream_nodes(node)

    def upstream_nodes(node):
        found, todo, visited = [], [node], set()
        while todo:
            node = todo.pop()
            if node is None or node in visited:
                continue
            visited.add(node)
            found += by_node.get(node, [])
            if MIXING_NODE.search(type(node).__name__) and \
                    not type(node).__name__.startswith('NativeDropout'):
                continue
            todo += [n for n, _ in node.next_functions]
        return found

    kept = {}

    def kept_fraction(module, stack=()):
        if module not in kept:
            before = [kept_fraction(u, stack + (module, ))
                      for u in upstream(module)
                      if u is not module and u not in stack]
            kept[module] = (1 - dropped[module]) * min(before, default=1.0)
        return kept[module]

    names = {m: n for n, m in model.backbone.named_modules()}
    worst, where, excess = 0.0, None, None
    for module in seen:
        fraction = 1 - kept_fraction(module)
        if fraction > worst:
            worst, where = fraction, names[module]
        # A dropout of few values (timm's 1-channel spatial attention: 98
        # of them) drops ratio +- 4 standard deviations by chance alone;
        # two in series at 0.5 drop 0.75, beyond that for 60 values on.
        allowed = ratio + max(tolerance, 4 * math.sqrt(
            ratio * (1 - ratio) / max(counts[module], 1)))
        if fraction > allowed and excess is None:
            excess = (fraction, names[module], allowed)
    if excess is not None:
        raise AssertionError(
            f'dropouts in series: {excess[0]:.2f} of the path through '
            f'{excess[1]} is dropped, more than the ratio {ratio} (+ '
            f'{excess[2] - ratio:.2f} for sampling)')
    return worst


def is_refusal(error: BaseException) -> bool:
    """Raised by augsub_mm on purpose (a ValueError / TypeError /
    RuntimeError whose raising frame is in augsub_mm)."""
    if not isinstance(error, (ValueError, TypeError, RuntimeError)):
        return False
    frames = traceback.extract_tb(error.__traceback__)
    return bool(frames) and f'{osp.sep}augsub_mm{osp.sep}' in \
        frames[-1].filename


def short(error: BaseException, limit: int = 160) -> str:
    text = ' '.join(str(error).split())
    first = text.split('. ')[0]
    return (first if len(first) <= limit else first[:limit - 3] + '...')


def cover(path: str, size: int, batch: int, ratio: float,
          sub_models=SUB_MODELS, tiny: bool = False) -> dict:
    """The row of one config: the plain step, then each sub-model (of the
    backbone's tiny version if ``tiny``, built under
    :func:`zoo_tiny.tables_patched`)."""
    from mmengine.config import Config
    cfg = Config.fromfile(path)
    model_cfg = cfg.model.to_dict()
    if cfg.get('data_preprocessor'):
        # What the Runner does with the config's top-level preprocessor.
        model_cfg.setdefault('data_preprocessor',
                             cfg.data_preprocessor.to_dict())
    row = dict(config=osp.relpath(path, zoo_root()),
               backbone=model_cfg['backbone']['type'])
    sizes = [size] if size >= crop_size(cfg) else [size, crop_size(cfg)]
    augsub_extra = {}
    if tiny:
        augsub_extra = zoo_tiny.entry(row['backbone']).get('augsub', {})
        try:
            model_cfg, tiny_size = zoo_tiny.tiny_model(model_cfg)
        except Exception as e:  # noqa: B902 -- a broken TINY entry: a bug
            for kind in sub_models:
                row[kind] = (f'FAILED: tiny {row["backbone"]}: '
                             f'{type(e).__name__}: {short(e)}')
            return row
        sizes = [tiny_size]
    error = None
    for s in sizes:
        try:
            one_step(model_cfg, s, batch)
            row['size'] = s
            break
        except Exception as e:  # noqa: B902 -- reported, not hidden
            error = e
    else:
        row['plain'] = f'{type(error).__name__}: {short(error)}'
        return row
    for kind in sub_models:
        augsub_cfg = dict(model_cfg, type='AugSubClassifier',
                          augsub=dict(type=kind, ratio=ratio,
                                      **augsub_extra.get(kind, {})))
        try:
            row[kind] = 'exact: ' + one_step(augsub_cfg, row['size'], batch)
        except Exception as e:  # noqa: B902
            row[kind] = ('refused: ' if is_refusal(e) else
                         f'FAILED: {type(e).__name__}: ') + short(e)
    return row


def markdown(rows: List[dict], version: str, tiny: bool = False) -> str:
    how = ('`python tools/analysis_tools/zoo_coverage.py --tiny`',
           "on the cheapest classification config of each backbone family "
           "with the backbone's tiny version (`zoo_tiny.py`).") if tiny else (
        '`python tools/analysis_tools/zoo_coverage.py`',
        'on the cheapest classification config of each backbone family.')
    lines = [
        f'Generated by {how[0]} on '
        f'mmpretrain {version}: one training step per cell, {how[1]}',
        '', '| backbone (config) | ' + ' | '.join(SUB_MODELS) + ' |',
        '|---|' + '---|' * len(SUB_MODELS)]
    for row in sorted(rows, key=lambda r: r['backbone'].lower()):
        name = f"{row['backbone']} (`{row['config']}`)"
        if 'plain' in row:
            cells = ['zoo config does not train: ' + row['plain']] + \
                [''] * (len(SUB_MODELS) - 1)
        else:
            cells = [row[k] for k in SUB_MODELS]
        lines.append(f'| {name} | ' + ' | '.join(
            c.replace('|', '/') for c in cells) + ' |')
    return '\n'.join(lines) + '\n'


def write_block(path: str, block: str) -> None:
    with open(path) as f:
        text = f.read()
    if BEGIN not in text or END not in text:
        raise SystemExit(f'{path} has no {BEGIN} ... {END} block to fill.')
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    with open(path, 'w') as f:
        f.write(head + BEGIN + '\n' + block + END + tail)


def parse_args(argv: Optional[List[str]] = None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--all', action='store_true',
                        help='every classification config, not one per '
                        'family')
    parser.add_argument('--families', nargs='+', metavar='BACKBONE',
                        help='only these backbone types (e.g. ResNet '
                        'ViTEVA02)')
    parser.add_argument('--sub-models', nargs='+', default=list(SUB_MODELS),
                        choices=SUB_MODELS)
    parser.add_argument('--size', type=int, default=64,
                        help='input size tried first (default 64); the '
                        "config's crop size when the network needs it")
    parser.add_argument('--batch', type=int, default=2)
    parser.add_argument('--ratio', type=float, default=0.5)
    parser.add_argument('--tiny', action='store_true',
                        help="each family's tiny version (zoo_tiny.py; "
                        '--size does not apply): every family in about a '
                        'minute')
    parser.add_argument('--out', help='also write the markdown table here')
    parser.add_argument('--json', help='write the rows as JSON here')
    parser.add_argument('--readme',
                        help=f'replace the block between {BEGIN} and {END} '
                        'of this file by the table')
    args = parser.parse_args(argv)
    if args.tiny and args.all:
        parser.error('--tiny runs the one config per family that its tiny '
                     'versions are made for: drop --all or --tiny.')
    return args


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    total = time.time()
    warnings.filterwarnings('ignore')
    import torch
    import mmpretrain
    import augsub_mm  # noqa: F401
    torch.set_num_threads(1)
    configs = classifier_configs(zoo_root())
    if args.families:
        unknown = set(args.families) - set(configs)
        if unknown:
            raise SystemExit(
                f'No classification config of the installed mmpretrain uses '
                f'{sorted(unknown)}; families: {sorted(configs)}')
        configs = {k: configs[k] for k in args.families}
    if args.tiny:
        missing = sorted(set(configs) - set(zoo_tiny.TINY))
        if missing:
            raise SystemExit(
                f'--tiny: no tiny version of the backbone families '
                f'{missing} (new in the installed mmpretrain '
                f'{mmpretrain.__version__}?): add an entry for each to TINY '
                f'in {zoo_tiny.__file__}.')
    patched = zoo_tiny.tables_patched if args.tiny else \
        (lambda family: contextlib.nullcontext())
    rows = []
    for family in sorted(configs, key=str.lower):
        for path in configs[family] if args.all else configs[family][:1]:
            start = time.time()
            with patched(family):
                row = cover(path, args.size, args.batch, args.ratio,
                            args.sub_models, tiny=args.tiny)
            row['seconds'] = round(time.time() - start, 1)
            rows.append(row)
            cells = [row.get(k, '') for k in args.sub_models]
            print(f"{family:28s} {row.get('plain') or ' | '.join(cells)}"
                  f"  ({row['seconds']} s)", flush=True)
    table = markdown(rows, mmpretrain.__version__, tiny=args.tiny)
    print()
    print(table)
    print(f'{len(rows)} configs; total time {time.time() - total:.1f} s '
          "(with the scan of the zoo's configs)")
    if args.out:
        with open(args.out, 'w') as f:
            f.write(table)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(rows, f, indent=1)
    if args.readme:
        write_block(args.readme, table)
    failed = [r for r in rows
              if any(str(r.get(k, '')).startswith('FAILED') for k in
                     SUB_MODELS)]
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
