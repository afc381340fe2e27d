"""Train a classifier: MMPretrain's ``tools/train.py`` with AugSub.

Same flags and behaviour as MMPretrain 1.2's training tool, plus
``--augsub TYPE[:RATIO]``, which switches AugSub (`Augmenting Sub-model to
Improve Main Model <https://arxiv.org/abs/2306.11339>`_) on in any
classification config, model-zoo ones included::

    python tools/train.py mmpretrain::deit3/deit3-small-p16_64xb64_in1k.py \\
        --augsub AugMask:0.5

Configs that use ``AugSubClassifier`` get the AugSub DDP wrapper, and runs on
machines without an accelerator start a gloo process group, so that
``tools/dist_train.sh`` also works on CPUs. At the end, rank 0 prints the
lines ``Checkpoint: <path>`` and ``Top-1: <value>``.
"""
import argparse
import glob
import os
import os.path as osp
from copy import deepcopy
from typing import Optional

import upstream_warnings  # noqa: F401  first: quiet upstream imports
import augsub_mm  # noqa: F401  registers AugSub; safe checkpoint loading
from augsub_mm.config import (SPEC_HELP, close_dist, enable_augsub,
                              parse_augsub, prepare_augsub_config,
                              resolve_config, setup_cpu_dist)
from mmengine.config import Config, ConfigDict, DictAction
from mmengine.device import get_device
from mmengine.hooks import Hook
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

LAUNCHERS = ('none', 'pytorch', 'slurm', 'mpi')


def augsub_spec(spec: str) -> dict:
    try:
        return parse_augsub(spec)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Train a model')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument(
        '--resume',
        nargs='?',
        type=str,
        const='auto',
        help='resume from this checkpoint; without a path, from the latest '
        'checkpoint in the work directory')
    parser.add_argument(
        '--amp',
        action='store_true',
        help='enable automatic-mixed-precision training (needs a GPU)')
    parser.add_argument(
        '--no-validate',
        action='store_true',
        help='do not evaluate checkpoints during training')
    parser.add_argument(
        '--auto-scale-lr',
        action='store_true',
        help='scale the learning rate by the actual over the base batch size')
    parser.add_argument(
        '--no-pin-memory',
        action='store_true',
        help='disable the pin_memory option of the dataloaders')
    parser.add_argument(
        '--no-persistent-workers',
        action='store_true',
        help='disable the persistent_workers option of the dataloaders')
    parser.add_argument(
        '--augsub',
        type=augsub_spec,
        metavar='TYPE[:RATIO]',
        help=f'train with an AugSub sub-model: {SPEC_HELP}')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override settings of the config, as key=value pairs (lists as '
        'key="[a,b]" or key=a,b; no white space)')
    parser.add_argument(
        '--launcher', choices=LAUNCHERS, default='none', help='job launcher')
    # torch.distributed.launch passes --local-rank (torch >= 2.0) or
    # --local_rank; torchrun sets LOCAL_RANK instead.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if args.amp and get_device() == 'cpu':
        parser.error('--amp: AmpOptimWrapper needs a CUDA device, and none '
                     'was found; drop --amp to train in fp32.')
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def dataloader_defaults(cfg: Config, args: argparse.Namespace) -> None:
    """pin_memory and persistent_workers on unless disabled, as MMPretrain
    does; what a config sets explicitly wins. persistent_workers only where
    there are workers: torch's DataLoader rejects it with num_workers=0."""
    defaults = ConfigDict(
        pin_memory=True,
        persistent_workers=True,
        collate_fn=dict(type='default_collate'))
    for field in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        if cfg.get(field) is None:
            continue
        loader = deepcopy(defaults)
        if not cfg[field].get('num_workers', 0):
            loader.persistent_workers = False
        loader.update(cfg[field])
        if args.no_pin_memory:
            loader.pin_memory = False
        if args.no_persistent_workers:
            loader.persistent_workers = False
        cfg[field] = loader


def merge_args(cfg: Config, args: argparse.Namespace) -> Config:
    """Apply the command line to the config, ``--cfg-options`` last."""
    if args.augsub is not None:
        enable_augsub(cfg, args.augsub)
    if args.no_validate:
        cfg.val_cfg = None
        cfg.val_dataloader = None
        cfg.val_evaluator = None
    cfg.launcher = args.launcher
    # work_dir: command line, else the config's, else from the file name.
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(args.config))[0])
    if args.amp:
        strategy = cfg.get('strategy') or {}
        if 'DeepSpeed' in str(strategy.get('type', '')):
            raise ValueError(
                '--amp sets AmpOptimWrapper, which DeepSpeed does not use: '
                'it runs mixed precision itself. Set strategy.fp16 = '
                'dict(enabled=True) or strategy.bf16 = dict(enabled=True) '
                "in the config (the model zoo's DeepSpeed configs enable "
                'fp16) and drop --amp.')
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume
    if args.auto_scale_lr:
        if 'auto_scale_lr' not in cfg:
            raise ValueError(
                '--auto-scale-lr needs the batch size the learning rate is '
                'meant for: add auto_scale_lr = dict(base_batch_size=...) to '
                'the config.')
        cfg.auto_scale_lr.enable = True
    dataloader_defaults(cfg, args)
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    return cfg


def check_work_dir(cfg: Config) -> None:
    """Refuse to start a new run over the checkpoints of an older one: the
    Runner would overwrite ``epoch_N.pth`` and ``last_checkpoint``."""
    if cfg.get('resume'):
        return
    found = sorted(glob.glob(osp.join(cfg.work_dir, '*.pth')))
    if osp.exists(osp.join(cfg.work_dir, 'last_checkpoint')):
        found.append(osp.join(cfg.work_dir, 'last_checkpoint'))
    if found:
        raise FileExistsError(
            f'work_dir {cfg.work_dir} already holds checkpoints of an earlier '
            f'run ({", ".join(osp.basename(f) for f in found)}); a new run '
            'would overwrite them. Pass --resume to continue that run, or '
            'choose another --work-dir.')


class LastValidation(Hook):
    """Keeps the metrics of this run's last validation (the message hub also
    holds those restored from a resumed checkpoint)."""

    priority = 'LOWEST'
    metrics: Optional[dict] = None

    def after_val_epoch(self, runner, metrics: Optional[dict] = None) -> None:
        self.metrics = metrics


def report(runner: Runner, validation: LastValidation) -> None:
    """Print the last checkpoint and this run's last top-1 (rank 0)."""
    if runner.rank != 0:
        return
    checkpoint = runner.message_hub.get_info('last_ckpt')
    top1 = [value for key, value in (validation.metrics or {}).items()
            if key.endswith('top1')]
    print(f'Checkpoint: {checkpoint if checkpoint else "n/a"}', flush=True)
    print(f'Top-1: {f"{top1[0]:.4f}" if top1 else "n/a"}', flush=True)


def main(argv=None) -> None:
    args = parse_args(argv)
    cfg = merge_args(Config.fromfile(resolve_config(args.config)), args)
    prepare_augsub_config(cfg)
    check_work_dir(cfg)
    setup_cpu_dist(cfg)
    if 'runner_type' in cfg:
        runner = RUNNERS.build(cfg)
    else:
        runner = Runner.from_cfg(cfg)
    validation = LastValidation()
    runner.register_hook(validation)
    runner.train()
    report(runner, validation)
    close_dist()


if __name__ == '__main__':
    main()
