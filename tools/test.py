"""Test (and evaluate) a classifier: MMPretrain's ``tools/test.py``.

Same flags and behaviour as MMPretrain 1.2's test tool. A checkpoint trained
with AugSub (`Augmenting Sub-model to Improve Main Model
<https://arxiv.org/abs/2306.11339>`_) is a plain classifier: test it with the
plain model-zoo config it was trained from::

    python tools/test.py mmpretrain::deit3/deit3-small-p16_64xb64_in1k.py \\
        work_dirs/deit3-small-augmask/epoch_400.pth

Runs on machines without an accelerator start a gloo process group, so that
``tools/dist_test.sh`` also works on CPUs.
"""
import argparse
import os
import os.path as osp
from copy import deepcopy

import upstream_warnings  # noqa: F401  first: quiet upstream imports
import augsub_mm  # noqa: F401  registers AugSub; safe checkpoint loading
import mmengine
from augsub_mm.config import close_dist, resolve_config, setup_cpu_dist
from mmengine.config import Config, ConfigDict, DictAction
from mmengine.evaluator import DumpResults
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

LAUNCHERS = ('none', 'pytorch', 'slurm', 'mpi')


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='MMPreTrain test (and eval) a model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument(
        '--work-dir', help='the dir to save the evaluation metrics')
    parser.add_argument('--out', help='the file to write results to')
    parser.add_argument(
        '--out-item',
        choices=['metrics', 'pred'],
        help='write the metrics or the predictions to --out; defaults to '
        'the predictions')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override settings of the config, as key=value pairs (lists as '
        'key="[a,b]" or key=a,b; no white space)')
    parser.add_argument(
        '--amp',
        action='store_true',
        help='test with automatic mixed precision')
    parser.add_argument(
        '--show-dir', help='the dir to save visualized predictions to')
    parser.add_argument(
        '--show',
        action='store_true',
        help='display the predictions in a window')
    parser.add_argument(
        '--interval', type=int, default=1, help='visualize every N samples')
    parser.add_argument(
        '--wait-time',
        type=float,
        default=2,
        help='seconds each window is displayed')
    parser.add_argument(
        '--no-pin-memory',
        action='store_true',
        help='disable the pin_memory option of the dataloaders')
    parser.add_argument(
        '--tta',
        action='store_true',
        help='test-time augmentation: the config\'s tta_pipeline and '
        'tta_model if it has them, else flip TTA averaging the scores')
    parser.add_argument(
        '--launcher', choices=LAUNCHERS, default='none', help='job launcher')
    # torch.distributed.launch passes --local-rank (torch >= 2.0) or
    # --local_rank; torchrun sets LOCAL_RANK instead.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if args.out is None and args.out_item is not None:
        parser.error('--out-item needs --out, the file to write it to.')
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def enable_tta(cfg: Config) -> None:
    """Wrap the model for test-time augmentation; without a tta_pipeline in
    the config, test each image and its horizontal flip."""
    cfg.setdefault('tta_model', dict(type='mmpretrain.AverageClsScoreTTA'))
    if 'tta_pipeline' not in cfg:
        pipeline = deepcopy(cfg.test_dataloader.dataset.pipeline)
        pipeline[-1] = dict(
            type='TestTimeAug',
            transforms=[[dict(type='RandomFlip', prob=1.),
                         dict(type='RandomFlip', prob=0.)],
                        [pipeline[-1]]])
        cfg.tta_pipeline = pipeline
    cfg.model = ConfigDict(**cfg.tta_model, module=cfg.model)
    cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline


def merge_args(cfg: Config, args: argparse.Namespace) -> Config:
    """Apply the command line to the config, ``--cfg-options`` last."""
    cfg.launcher = args.launcher
    # work_dir: command line, else the config's, else from the file name.
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(args.config))[0])
    cfg.load_from = args.checkpoint
    if args.amp:
        cfg.test_cfg.fp16 = True
    if args.show or args.show_dir is not None:
        if 'visualization' not in cfg.default_hooks:
            raise ValueError(
                '--show/--show-dir need a VisualizationHook: add '
                "visualization=dict(type='VisualizationHook') to the "
                "config's default_hooks.")
        cfg.default_hooks.visualization.update(
            enable=True,
            show=args.show,
            wait_time=args.wait_time,
            out_dir=args.show_dir,
            interval=args.interval)
    if args.tta:
        enable_tta(cfg)
    if cfg.get('test_dataloader') is not None:
        loader = ConfigDict(
            pin_memory=True, collate_fn=dict(type='default_collate'))
        loader.update(cfg.test_dataloader)
        if args.no_pin_memory:
            loader.pin_memory = False
        cfg.test_dataloader = loader
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    return cfg


def main(argv=None) -> None:
    args = parse_args(argv)
    cfg = merge_args(Config.fromfile(resolve_config(args.config)), args)
    setup_cpu_dist(cfg)
    if 'runner_type' in cfg:
        runner = RUNNERS.build(cfg)
    else:
        runner = Runner.from_cfg(cfg)
    if args.out and args.out_item in ('pred', None):
        runner.test_evaluator.metrics.append(
            DumpResults(out_file_path=args.out))
    metrics = runner.test()
    if args.out and args.out_item == 'metrics':
        mmengine.dump(metrics, args.out)
    close_dist()


if __name__ == '__main__':
    main()
