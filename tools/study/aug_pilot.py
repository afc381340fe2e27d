"""Top-1 after each of a few epochs under a chosen RandAugment strength:
the pilot that set the heavy regime's magnitude.

Trains a heavy-regime config (default: the ViT baseline) on the first
``--num-train`` training images for ``--epochs`` epochs (one epoch of
linear warm-up, then cosine), with RandAugment at ``--magnitude`` or
without it (``--no-randaugment``), everything else the config's (Mixup /
CutMix, soft targets), and prints the top-1 on the 10k test images after
each epoch. The numbers in the note of
configs/fashion_mnist/_base_/fashion-mnist-heavy.py come from::

    python tools/study/aug_pilot.py --magnitude 9 --threads 2
    python tools/study/aug_pilot.py --magnitude 5
    python tools/study/aug_pilot.py --no-randaugment --threads 2
"""
import argparse
import json
import os
import os.path as osp
import sys
import tempfile

HERE = osp.dirname(osp.abspath(__file__))
REPO = osp.dirname(osp.dirname(HERE))
sys.path.insert(0, HERE)
DEFAULT = osp.join(REPO, 'configs', 'fashion_mnist', 'heavy',
                   'vit-tiny-p4_1xb64_fashion-mnist-heavy.py')


def pilot_cfg(path: str, magnitude, epochs: int, num_train: int,
              num_test: int, data_root: str):
    """The config with the pilot's data, schedule and augmentation; None as
    ``magnitude``: no RandAugment."""
    from mmengine.config import Config
    cfg = Config.fromfile(path)
    for loader in (cfg.train_dataloader, cfg.val_dataloader,
                   cfg.test_dataloader):
        loader.dataset.data_root = data_root
    cfg.train_dataloader.dataset.indices = num_train
    cfg.val_dataloader.dataset.indices = num_test
    pipeline = []
    for step in cfg.train_dataloader.dataset.pipeline:
        if step['type'] == 'RandAugment':
            if magnitude is None:
                continue
            step['magnitude_level'] = magnitude
        pipeline.append(step)
    cfg.train_dataloader.dataset.pipeline = pipeline
    cfg.train_cfg.max_epochs = epochs
    cfg.train_cfg.val_interval = 1
    cfg.param_scheduler = [dict(
        type='LinearLR', start_factor=0.01, by_epoch=True, begin=0, end=1,
        convert_to_iter_based=True)]
    if epochs > 1:
        cfg.param_scheduler.append(dict(
            type='CosineAnnealingLR', by_epoch=True, begin=1, end=epochs,
            eta_min=1e-5, convert_to_iter_based=True))
    cfg.log_level = 'WARNING'
    cfg.default_hooks.logger.interval = 50
    return cfg


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', nargs='?', default=DEFAULT)
    strength = parser.add_mutually_exclusive_group(required=True)
    strength.add_argument('--magnitude', type=int,
                          help="RandAugment's magnitude_level (0-10)")
    strength.add_argument('--no-randaugment', action='store_true')
    parser.add_argument('--epochs', type=int, default=2)
    parser.add_argument('--num-train', type=int, default=20000)
    parser.add_argument('--num-test', type=int, default=10000)
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument(
        '--data-root', default=os.environ.get(
            'FMNIST_ROOT', osp.join(REPO, 'data', 'fashion_mnist')))
    args = parser.parse_args(argv)
    import torch
    torch.set_num_threads(args.threads)
    import augsub_mm  # noqa: F401
    from mmengine.runner import Runner
    cfg = pilot_cfg(args.config, args.magnitude, args.epochs, args.num_train,
                    args.num_test, args.data_root)
    with tempfile.TemporaryDirectory() as work_dir:
        cfg.work_dir = work_dir
        runner = Runner.from_cfg(cfg)
        runner.train()
        with open(osp.join(runner.log_dir, 'vis_data', 'scalars.json')) as f:
            top1 = [json.loads(line)['accuracy/top1'] for line in f
                    if 'accuracy/top1' in line]
    what = ('no RandAugment' if args.magnitude is None else
            f'RandAugment m{args.magnitude}')
    print(f'{osp.relpath(args.config, REPO)}, {what}, {args.num_train} '
          f'images, {args.threads} thread(s): top-1 after each epoch '
          + ' / '.join(f'{t:.2f}' for t in top1), flush=True)
    return top1


if __name__ == '__main__':
    main()
