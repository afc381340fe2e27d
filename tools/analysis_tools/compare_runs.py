"""Compare training runs over epochs in one picture.

Reads mmengine's json logs (``WORK_DIR/<timestamp>/vis_data/scalars.json``,
written by ``LoggerHook`` with the default ``LocalVisBackend``) of several
runs and draws their training loss -- the main loss and, for AugSub runs
(`Augmenting Sub-model to Improve Main Model
<https://arxiv.org/abs/2306.11339>`_), the sub-model's ``loss_sub`` -- and
their validation top-1 over epochs.

Example::

    python tools/analysis_tools/compare_runs.py \\
        work_dirs/vit-tiny-p4_1xb64_fashion-mnist-2k \\
        work_dirs/vit-tiny-p4_1xb64-augmask_fashion-mnist-2k \\
        --labels baseline AugMask --out compare.png
"""
import argparse
import glob
import json
import os.path as osp
from collections import defaultdict
from typing import Dict, List, Optional, Tuple

TRAIN_KEYS = ('loss', 'loss_sub')
TOP1_KEY = 'accuracy/top1'


def find_logs(path: str) -> List[str]:
    """The ``scalars.json`` logs of a run, oldest first.

    ``path`` is a work dir (every ``<timestamp>/vis_data/scalars.json`` in
    it: a resumed run continues in a new timestamp folder), one timestamp
    folder, or a json log file.
    """
    if osp.isfile(path):
        return [path]
    for pattern in ('*/vis_data/scalars.json', 'vis_data/scalars.json'):
        logs = sorted(glob.glob(osp.join(path, pattern)))
        if logs:
            return logs
    raise FileNotFoundError(
        f'No mmengine json log under {path!r}: expected '
        'WORK_DIR/<timestamp>/vis_data/scalars.json, which LoggerHook '
        "writes with vis_backends=[dict(type='LocalVisBackend')]. Pass a "
        'work dir of a training run, or the json file itself.')


def read_log(path: str) -> Dict[str, list]:
    """Per-epoch training losses and validation top-1 of one run.

    Args:
        path (str): Work dir, timestamp folder or json log (see
            :func:`find_logs`).

    Returns:
        dict: ``epoch`` (training epochs), ``loss`` and ``loss_sub`` (the
        mean of the logged values of each epoch; ``loss_sub`` is empty for
        runs without a sub-model), ``val_epoch`` and ``top1`` (validation
        top-1 in %). A later log (a resumed run) overrides earlier epochs.
        Logged values are means over mmengine's ``log_processor``
        ``window_size``: with ``interval=1`` and ``window_size=1`` the
        epoch means are exact.
    """
    train = defaultdict(lambda: defaultdict(list))
    top1 = {}
    for log in find_logs(path):
        with open(log) as f:
            records = [json.loads(line) for line in f if line.strip()]
        train_records = [r for r in records if 'epoch' in r and 'loss' in r]
        if not train_records:
            continue  # a test-only run in the same work dir
        epochs = {r['epoch'] for r in train_records}
        for epoch in epochs:
            train.pop(epoch, None)
        for r in train_records:
            for key in TRAIN_KEYS:
                if key in r:
                    train[r['epoch']][key].append(r[key])
        top1.update((r['step'], r[TOP1_KEY]) for r in records
                    if TOP1_KEY in r)
    if not train:
        raise ValueError(
            f'{path!r} holds no epoch-based training log (records with '
            "'epoch' and 'loss'); compare_runs plots runs of "
            'EpochBasedTrainLoop.')
    epochs = sorted(train)
    out = dict(epoch=epochs, val_epoch=sorted(top1))
    out['top1'] = [top1[e] for e in out['val_epoch']]
    for key in TRAIN_KEYS:
        values = [train[e][key] for e in epochs]
        out[key] = [sum(v) / len(v) for v in values] if all(values) else []
    return out


def plot_runs(runs: List[Tuple[str, Dict[str, list]]], out: str,
              title: Optional[str] = None, log_loss: bool = False,
              colors: Optional[List[str]] = None) -> str:
    """Draw training losses and validation top-1 of ``runs`` (pairs of a
    label and :func:`read_log`'s output) side by side, with one legend
    beside them; save a PNG to ``out`` and return its path. ``log_loss``
    draws the loss on a log scale; ``colors`` gives each run its colour
    (default: matplotlib's cycle)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    fig, (ax_loss, ax_top1) = plt.subplots(1, 2, figsize=(14, 4))
    handles = []
    for i, (label, run) in enumerate(runs):
        color = colors[i] if colors else f'C{i % 10}'
        ax_loss.plot(run['epoch'], run['loss'], color=color)
        if run['loss_sub']:
            ax_loss.plot(run['epoch'], run['loss_sub'], color=color,
                         linestyle='--')
        ax_top1.plot(run['val_epoch'], run['top1'], color=color, marker='o')
        handles.append(Line2D([], [], color=color, marker='o', label=label))
    if any(run['loss_sub'] for _, run in runs):
        handles += [
            Line2D([], [], color='grey', label='loss of the main model'),
            Line2D([], [], color='grey', linestyle='--',
                   label='loss of the sub-model')]
    ax_loss.set(xlabel='epoch', ylabel='training loss (epoch mean)',
                title='Training loss', yscale='log' if log_loss else 'linear')
    ax_top1.set(xlabel='epoch', ylabel='top-1 (%)', title='Validation top-1')
    for ax in (ax_loss, ax_top1):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0, 0.78, 1))
    fig.legend(handles=handles, loc='center left', fontsize=8,
               bbox_to_anchor=(0.78, 0.5), frameon=False)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Plot the training loss (main and sub) and validation '
        'top-1 of several runs over epochs, from their mmengine json logs.')
    parser.add_argument('work_dirs', nargs='+', metavar='WORK_DIR',
                        help='work dirs of training runs (or json logs)')
    parser.add_argument('--labels', nargs='+',
                        help='legend labels, one per run (default: the work '
                        "dirs' names)")
    parser.add_argument('--out', default='compare_runs.png',
                        help='output PNG (default: compare_runs.png)')
    parser.add_argument('--title', help='figure title')
    parser.add_argument('--log-loss', action='store_true',
                        help='training loss on a log scale')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    labels = args.labels or [
        osp.basename(osp.normpath(d)) for d in args.work_dirs]
    if len(labels) != len(args.work_dirs):
        raise SystemExit(f'--labels got {len(labels)} labels for '
                         f'{len(args.work_dirs)} runs; give one per run.')
    runs = [(label, read_log(d)) for label, d in zip(labels, args.work_dirs)]
    print(f'Saved {plot_runs(runs, args.out, args.title, args.log_loss)}')


if __name__ == '__main__':
    main()
