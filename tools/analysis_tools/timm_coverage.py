"""Which sub-model trains on which timm model: the coverage matrix of timm.

For every model module of the installed timm (``timm.list_modules()``:
``vision_transformer``, ``swin_transformer``, ``resnet``, ...), this takes
its smallest variant (:func:`smallest_variant`: the few cheapest by name,
then the fewest parameters, counted on the meta device), builds it as
MMPretrain's ``TimmClassifier`` (``pretrained=False``: offline) and runs ONE
real training step through ``train_step`` -- data preprocessor, forward,
backward, optimizer step (zoo_coverage's :func:`zoo_coverage.one_step`) --
for the plain classifier and for each sub-model (AugMask, AugDrop, AugPath
at ``--ratio``), on random images at a small size (``--size``, built with
``img_size=--size`` where the model takes it; the model's own
``pretrained_cfg['input_size']`` when it needs its size).

The models are built as a recipe builds them for AugSub:
``drop_path_rate=0.1``, ``proj_drop_rate=0.1`` and ``drop_rate=0.1``
(:data:`RECIPE`), each only where timm's constructor takes it (a rejected
keyword is dropped and the build retried; the row lists what was kept).
Drop-path modules and the blocks' dropouts then exist where a model builds
them only for a positive rate, so AugPath and AugDrop have their slots;
AugPath also drives the ``drop_path1/2`` slots that hold an identity.

Cells:

- ``exact: <form>``: the step trained; ``<form>`` is the sub-model's
  ``describe()`` (token drop, mask token, input masking, dropout (N
  layers), drop-path (N slots)). A sub pass that changes nothing is refused
  by the plugin at its first step, so it cannot show up as exact.
- ``refused: <reason>``: augsub_mm refused the combination with the
  method's reason (:func:`zoo_coverage.is_refusal`).
- ``baseline does not train``: the plain TimmClassifier step fails too
  (timm's or TimmClassifier's own problem); the sub-models are not tried.
- ``not built``: no variant of the module builds offline.
- ``timed out``: the module ran past ``--timeout`` seconds.
- ``FAILED: <error>``: anything else, i.e. a bug (exit status 1). Also a
  ViT relative that got input masking (a model holding timm's
  ``PatchEmbed`` or a ``patch_drop`` site, or beginning with a
  ``patch_embed``: AugMask must act on its tokens),
  and an AugDrop pass that drops more than ``ratio + 0.08`` of one path
  (dropouts in series, measured by :func:`zoo_coverage.dropout_per_path`).

Examples::

    python tools/analysis_tools/timm_coverage.py --subset      # CI, ~30 s
    python tools/analysis_tools/timm_coverage.py --modules resnet beit
    nice python tools/analysis_tools/timm_coverage.py --timeout 300 \\
        --json rows.json --docs docs/timm_coverage.md       # every module
"""
import argparse
import json
import os.path as osp
import re
import signal
import sys
import time
import warnings
from typing import Dict, List, Optional, Tuple

HERE = osp.dirname(osp.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, osp.dirname(HERE))

import zoo_coverage  # noqa: E402
from zoo_coverage import SUB_MODELS, dropout_per_path, is_refusal  # noqa
from zoo_coverage import one_step, short  # noqa: E402

BEGIN = ('<!-- timm-coverage:begin (written by '
         'tools/analysis_tools/timm_coverage.py) -->')
END = '<!-- timm-coverage:end -->'
NUM_CLASSES = 4
#: Constructor arguments of a recipe that trains with AugSub, passed where
#: timm's constructor takes them.
RECIPE = dict(drop_path_rate=0.1, proj_drop_rate=0.1, drop_rate=0.1)
#: Name words that say a variant is cheap (earlier = cheaper) and words
#: that make one a poor representative (large inputs, distillation heads
#: that TimmClassifier cannot train, headless encoders).
SIZE_WORDS = ('test', 'atto', 'femto', 'pico', 'nano', 'xxs', 'zepto',
              'xxsmall', 'micro', 'tiny', 'xs', 'xsmall', 'mini', 't', 'b0',
              's0', 'm0', 'a', 'small', 's', 's1', 'lite', '050', '18', '26',
              '34', 'medium', 'm', 'base', 'b')
PENALTIES = ('distilled', 'dist', 'enc', 'in21k', '21k', '384', '448',
             '512', 'large', 'huge', 'giant', 'gigantic', 'clip', 'siglip',
             'sam', 'dino', 'cls', 'merge', 'align', 'so400m', 'so150m')
#: Name candidates whose parameters are counted (meta device) per module.
CANDIDATES = 6
#: --subset: one cheap model per kind of timm architecture (a module, and
#: its model with the constructor arguments that shrink it to a couple of
#: seconds per row where its smallest variant is larger).
SUBSET: Dict[str, Tuple[str, dict]] = {
    'vision_transformer': ('test_vit', {}),
    'deit': ('deit_tiny_patch16_224', dict(depth=2)),
    'eva': ('eva02_tiny_patch14_224', dict(depth=2)),
    'swin_transformer': ('swin_tiny_patch4_window7_224',
                         dict(depths=(1, 1), num_heads=(1, 2),
                              embed_dim=16, window_size=4)),
    'convnext': ('test_convnext', {}),
    'resnet': ('test_resnet', {}),
    'efficientnet': ('test_efficientnet', {}),
    'maxxvit': ('test_maxvit', {}),
    'mlp_mixer': ('mixer_s32_224', {}),
    'pvt_v2': ('pvt_v2_b0', dict(depths=(1, 1, 1, 1))),
}


def cost_key(name: str):
    words = re.split(r'[-_.]', name.lower())
    penalty = sum(p in words for p in PENALTIES)
    rank = min((SIZE_WORDS.index(w) for w in words if w in SIZE_WORDS),
               default=len(SIZE_WORDS))
    return penalty, rank, len(name), name


def param_count(name: str) -> Optional[int]:
    """Parameters of ``name`` built on the meta device (no memory, no
    init cost); None where it does not build there."""
    import timm
    import torch
    try:
        with torch.device('meta'), warnings.catch_warnings():
            warnings.simplefilter('ignore')
            model = timm.create_model(name, pretrained=False,
                                      num_classes=NUM_CLASSES)
    except Exception:  # noqa: B902 -- the next candidate
        return None
    return sum(p.numel() for p in model.parameters())


#: Parameters above which a module's smallest variant is built with
#: :data:`SHRINK` (where its constructor takes it): the same classes at a
#: cost one CPU step affords (deepseek_vit's smallest has 412 M and needs
#: its own 546 px input).
LARGE = 100e6
SHRINK = dict(depth=2)


def shrunk(name: str) -> dict:
    """:data:`SHRINK` for a variant over :data:`LARGE` parameters whose
    constructor takes it, else nothing."""
    import timm
    import torch
    count = param_count(name)
    if count is None or count <= LARGE:
        return {}
    try:
        with torch.device('meta'), warnings.catch_warnings():
            warnings.simplefilter('ignore')
            timm.create_model(name, pretrained=False,
                              num_classes=NUM_CLASSES, **SHRINK)
    except Exception:  # noqa: B902 -- it takes no depth: built as it is
        return {}
    return dict(SHRINK)


def smallest_variant(module: str) -> Tuple[Optional[str], str]:
    """The module's cheapest variant and how it was chosen: among the
    :data:`CANDIDATES` cheapest by name (:func:`cost_key`), the one with
    the fewest parameters."""
    import timm
    names = sorted(timm.list_models(module=module), key=cost_key)
    counted = [(param_count(n), n) for n in names[:CANDIDATES]]
    # A penalized name (a headless encoder, a distillation head) only
    # where no other builds.
    built = sorted((cost_key(n)[0], c, n) for c, n in counted
                   if c is not None)
    if built:
        return built[0][2], f'{built[0][1] / 1e6:.1f} M params'
    return None, f'none of {[n for _, n in counted]} builds'


def model_cfg(name: str, kwargs: dict, augsub: Optional[dict] = None
              ) -> dict:
    cfg = dict(type='TimmClassifier', model_name=name, pretrained=False,
               num_classes=NUM_CLASSES, **kwargs,
               data_preprocessor=dict(type='mmpretrain.ClsDataPreprocessor',
                                      num_classes=NUM_CLASSES,
                                      mean=[127.5] * 3, std=[127.5] * 3))
    if augsub is not None:
        cfg.update(type='AugSubClassifier', augsub=augsub)
    return cfg


#: How constructors reject a keyword: Python's message, and timm's
#: ``build_model_with_cfg`` listing several.
UNEXPECTED = re.compile(r"unexpected keyword argument '(\w+)'|"
                        r"unexpected keyword argument\(s\): \[([^\]]*)\]")


def rejected(error: TypeError) -> List[str]:
    """The keywords a constructor's TypeError rejects."""
    found = UNEXPECTED.search(str(error))
    if not found:
        return []
    if found.group(1):
        return [found.group(1)]
    return re.findall(r"'(\w+)'", found.group(2))


def native_size(name: str) -> int:
    import timm
    size = timm.get_pretrained_cfg_value(name, 'input_size') or (3, 224, 224)
    return int(size[-1])


def plain_step(name: str, kwargs: dict, size: int, batch: int
               ) -> Tuple[dict, int]:
    """One plain step, at ``size`` (built with ``img_size=size`` where the
    constructor takes it), else at the model's own input size; the
    keywords the constructor rejects are dropped. Returns the keywords
    kept and the size that trained; raises the last error."""
    native = native_size(name)
    tries = [(size, dict(kwargs, img_size=size)), (size, dict(kwargs))]
    if native != size:
        tries.append((native, dict(kwargs)))
    error = None
    for s, kw in tries:
        while True:
            try:
                one_step(model_cfg(name, kw), s, batch)
                return kw, s
            except TypeError as e:
                bad = [k for k in rejected(e) if k in kw]
                if bad:
                    for k in bad:
                        kw.pop(k)
                    if 'img_size' in bad:
                        break  # the next try is this size without it
                    continue
                error = e
                break
            except Exception as e:  # noqa: B902 -- the next size
                error = e
                break
    raise error


def vit_relative(model) -> bool:
    """Whether a timm model is made of patch tokens the way a ViT is: it
    holds timm's ``PatchEmbed`` or a ``patch_drop`` site, or begins with a
    patch embedding by augsub_mm's own reading (``patch_embed_of``: a
    ``patch_embed`` of any class, e.g. Gemma-4's ``encoder.patch_embed``,
    or Twins' ``patch_embeds``)."""
    from timm.layers import PatchEmbed

    from augsub_mm.models.families.timm import patch_embed_of
    return patch_embed_of(model) is not None or any(
        isinstance(m, PatchEmbed) or hasattr(m, 'patch_drop')
        for m in model.modules())


def sub_step(name: str, kwargs: dict, kind: str, size: int, batch: int,
             ratio: float) -> str:
    """The cell of one sub-model."""
    cfg = model_cfg(name, kwargs, dict(type=kind, ratio=ratio))
    try:
        form = one_step(cfg, size, batch)
    except Exception as e:  # noqa: B902 -- reported, not hidden
        return ('refused: ' if is_refusal(e) else
                f'FAILED: {type(e).__name__}: ') + short(e)
    if form == 'input masking':
        import timm
        probe = timm.create_model(name, pretrained=False,
                                  num_classes=NUM_CLASSES, **kwargs)
        if vit_relative(probe):
            return ('FAILED: input masking of a ViT relative (it holds a '
                    'PatchEmbed or patch_drop site: AugMask must act on its '
                    'tokens)')
    return 'exact: ' + form


class Timeout(BaseException):  # not caught as a cell's error
    pass


def _alarm(signum, frame):
    raise Timeout()


def cover(module: str, size: int, batch: int, ratio: float,
          sub_models=SUB_MODELS, subset: bool = False,
          timeout: int = 0) -> dict:
    """The row of one timm module."""
    start = time.time()
    row = dict(module=module)
    if timeout:
        signal.signal(signal.SIGALRM, _alarm)
        signal.alarm(timeout)
    try:
        if subset and module in SUBSET:
            name, extra = SUBSET[module]
            row['chosen'] = 'subset'
        else:
            name, row['chosen'] = smallest_variant(module)
            extra = shrunk(name) if name else {}
            if extra:
                row['chosen'] += ', built with ' + ', '.join(
                    f'{k}={v}' for k, v in extra.items())
        row['model'] = name
        if name is None:
            row['plain'] = 'not built: ' + row['chosen']
            return row
        try:
            kwargs, row['size'] = plain_step(name, dict(extra, **RECIPE),
                                             size, batch)
        except Timeout:
            raise
        except Exception as e:  # noqa: B902 -- timm's own problem
            row['plain'] = ('baseline does not train: '
                            f'{type(e).__name__}: {short(e)}')
            return row
        row['kwargs'] = {k: v for k, v in kwargs.items() if k not in extra}
        for kind in sub_models:
            row[kind] = sub_step(name, kwargs, kind, row['size'], batch,
                                 ratio)
    except Timeout:
        row['plain'] = f'timed out after {timeout} s'
        for kind in sub_models:
            row.pop(kind, None)
    finally:
        if timeout:
            signal.alarm(0)
        row['seconds'] = round(time.time() - start, 1)
    return row


def kind_of(row: dict, sub_models=SUB_MODELS) -> str:
    """The summary category of a row."""
    cells = [row.get(k, '') for k in sub_models]
    if 'plain' in row:
        return row['plain'].split(':')[0].split(' after')[0]
    if any(c.startswith('FAILED') for c in cells):
        return 'FAILED'
    if all(c.startswith('exact') for c in cells):
        return 'exact for all'
    return 'exact for some, refused for the others'


def summary(rows: List[dict], sub_models=SUB_MODELS) -> str:
    counts = {}
    for row in rows:
        k = kind_of(row, sub_models)
        counts[k] = counts.get(k, 0) + 1
    order = ('exact for all', 'exact for some, refused for the others',
             'FAILED', 'baseline does not train', 'not built', 'timed out')
    parts = [f'{counts[k]} {k}' for k in order if counts.get(k)]
    cells = [row[k] for row in rows for k in sub_models if k in row]
    per = ', '.join(
        f'{sum(row.get(k, "").startswith("exact") for row in rows)} {k}'
        for k in sub_models)
    return (f'{len(rows)} timm modules: ' + '; '.join(parts) +
            f'. Exact cells per sub-model: {per} ({len(cells)} cells tried, '
            f'{sum(c.startswith("refused") for c in cells)} refused).')


def markdown(rows: List[dict], version: str, subset: bool = False,
             sub_models=SUB_MODELS) -> str:
    command = '`python tools/analysis_tools/timm_coverage.py' + (
        ' --subset`' if subset else '`')
    lines = [
        f'Generated by {command} on timm {version}: one training step per '
        'cell, on the smallest variant of each timm model module' +
        (' (the CI subset)' if subset else '') + '.', '',
        summary(rows, sub_models), '',
        '| module (model, size) | ' + ' | '.join(sub_models) + ' | s |',
        '|---|' + '---|' * (len(sub_models) + 1)]
    for row in sorted(rows, key=lambda r: r['module']):
        built = row.get('chosen', '').partition(', built with ')[2]
        name = row['module'] + (
            f" (`{row['model']}`" + (f", {built}" if built else '') +
            (f", {row['size']} px" if 'size' in row else '') + ')'
            if row.get('model') else '')
        if 'plain' in row:
            cells = [row['plain']] + [''] * (len(sub_models) - 1)
        else:
            cells = [row[k] for k in sub_models]
        lines.append(f'| {name} | ' + ' | '.join(
            c.replace('|', '/') for c in cells) + f" | {row['seconds']} |")
    return '\n'.join(lines) + '\n'


def write_block(path: str, block: str) -> None:
    """Replace the block between :data:`BEGIN` and :data:`END` of
    ``path``."""
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
    parser.add_argument('--modules', nargs='+', metavar='MODULE',
                        help='only these timm modules (timm.list_modules())')
    parser.add_argument('--subset', action='store_true',
                        help='the fast CI subset: ' + ', '.join(SUBSET))
    parser.add_argument('--sub-models', nargs='+', default=list(SUB_MODELS),
                        choices=SUB_MODELS)
    parser.add_argument('--size', type=int, default=64,
                        help='input size tried first (default 64)')
    parser.add_argument('--batch', type=int, default=2)
    parser.add_argument('--ratio', type=float, default=0.5)
    parser.add_argument('--timeout', type=int, default=0,
                        help='seconds per module (0: none); a module past '
                        'it is a "timed out" row')
    parser.add_argument('--rows', nargs='+', metavar='JSON',
                        help='merge rows of earlier --json runs instead of '
                        'running (batched runs of every module)')
    parser.add_argument('--out', help='also write the markdown table here')
    parser.add_argument('--json', help='write the rows as JSON here')
    parser.add_argument('--docs', help=f'replace the block between {BEGIN} '
                        f'and {END} of this file by the table')
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    total = time.time()
    warnings.filterwarnings('ignore')
    import timm
    import torch
    import augsub_mm  # noqa: F401
    torch.set_num_threads(1)
    if args.rows:
        rows = []
        for path in args.rows:
            with open(path) as f:
                rows += json.load(f)
        rows = list({r['module']: r for r in rows}.values())
    else:
        modules = timm.list_modules()
        if args.modules:
            unknown = set(args.modules) - set(modules)
            if unknown:
                raise SystemExit(f'Not timm modules: {sorted(unknown)}; '
                                 f'modules: {modules}')
            modules = args.modules
        elif args.subset:
            modules = list(SUBSET)
        rows = []
        for module in modules:
            row = cover(module, args.size, args.batch, args.ratio,
                        args.sub_models, args.subset, args.timeout)
            rows.append(row)
            cells = [row.get(k, '') for k in args.sub_models]
            print(f"{module:26s} {row.get('model') or '':32s} "
                  f"{row.get('plain') or ' | '.join(cells)}  "
                  f"({row['seconds']} s)", flush=True)
            if args.json:  # after each row: a long run keeps what it did
                with open(args.json, 'w') as f:
                    json.dump(rows, f, indent=1)
    table = markdown(rows, timm.__version__, args.subset, args.sub_models)
    print()
    print(table)
    print(f'total time {time.time() - total:.1f} s')
    if args.out:
        with open(args.out, 'w') as f:
            f.write(table)
    if args.json and not args.rows:
        with open(args.json, 'w') as f:
            json.dump(rows, f, indent=1)
    if args.docs:
        write_block(args.docs, table)
    return 1 if any(kind_of(r, args.sub_models) == 'FAILED'
                    for r in rows) else 0


if __name__ == '__main__':
    sys.exit(main())
