"""Seconds per training iteration of study configs: the sizing pilot.

Trains each given config for ``--iters`` iterations (batch and pipeline of
the config, one torch thread, data loading in the process as in the study)
with mmengine's Runner and reports the CPU and wall seconds per iteration
after ``--skip`` warm-up iterations, and the seconds to validate
``--val-images`` test images. The study driver's regimes are sized with it
(see the ``# NOTE`` of configs/fashion_mnist/_base_/fashion-mnist-heavy.py).

Example::

    python tools/study/time_iters.py \\
        configs/fashion_mnist/heavy/vit-tiny-p4_1xb64_fashion-mnist-heavy.py
"""
import argparse
import os
import os.path as osp
import sys
import tempfile
import time

HERE = osp.dirname(osp.abspath(__file__))
REPO = osp.dirname(osp.dirname(HERE))
sys.path.insert(0, HERE)


def time_config(path: str, iters: int, skip: int, val_images: int,
                data_root: str) -> dict:
    import torch
    from mmengine.config import Config
    from mmengine.hooks import Hook
    from mmengine.runner import Runner

    cfg = Config.fromfile(path)
    batch = cfg.train_dataloader.batch_size
    for loader in (cfg.train_dataloader, cfg.val_dataloader,
                   cfg.test_dataloader):
        loader.dataset.data_root = data_root
    cfg.train_dataloader.dataset.indices = batch * (iters + skip)
    cfg.val_dataloader.dataset.indices = val_images
    cfg.test_dataloader.dataset.indices = val_images
    cfg.train_cfg.max_epochs = 1
    cfg.train_cfg.val_interval = 1
    cfg.param_scheduler = []
    cfg.log_level = 'WARNING'
    stamps = []

    class Stamp(Hook):
        def after_train_iter(self, runner, batch_idx, data_batch=None,
                             outputs=None):
            stamps.append((time.process_time(), time.time()))

        def before_val(self, runner):
            stamps.append((time.process_time(), time.time()))

        def after_val(self, runner, metrics=None):
            stamps.append((time.process_time(), time.time()))

    with tempfile.TemporaryDirectory() as work_dir:
        cfg.work_dir = work_dir
        runner = Runner.from_cfg(cfg)
        runner.register_hook(Stamp(), 'LOWEST')
        runner.train()
    train, (val_cpu0, val_wall0), (val_cpu1, val_wall1) = \
        stamps[:-2], stamps[-2], stamps[-1]
    (cpu0, wall0), (cpu1, wall1) = train[skip - 1], train[-1]
    n = len(train) - skip
    return dict(config=osp.relpath(path, REPO), batch=batch, iters=n,
                threads=torch.get_num_threads(),
                cpu_s_per_iter=(cpu1 - cpu0) / n,
                wall_s_per_iter=(wall1 - wall0) / n,
                val_cpu_s_per_1k=(val_cpu1 - val_cpu0) / val_images * 1000,
                val_wall_s_per_1k=(val_wall1 - val_wall0) / val_images * 1000)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('configs', nargs='+')
    parser.add_argument('--iters', type=int, default=100)
    parser.add_argument('--skip', type=int, default=10)
    parser.add_argument('--val-images', type=int, default=2000)
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument(
        '--data-root', default=os.environ.get(
            'FMNIST_ROOT', osp.join(REPO, 'data', 'fashion_mnist')))
    args = parser.parse_args(argv)
    import torch
    torch.set_num_threads(args.threads)
    import augsub_mm  # noqa: F401
    import masked_main  # noqa: F401
    for path in args.configs:
        r = time_config(path, args.iters, args.skip, args.val_images,
                        args.data_root)
        print(f"{r['config']}: batch {r['batch']}, {r['iters']} iterations,"
              f" {r['threads']} thread(s): {r['cpu_s_per_iter']:.3f} CPU-s "
              f"({r['wall_s_per_iter']:.3f} wall-s) per iteration; "
              f"validation {r['val_cpu_s_per_1k']:.2f} CPU-s "
              f"({r['val_wall_s_per_1k']:.2f} wall-s) per 1000 images",
              flush=True)


if __name__ == '__main__':
    main()
