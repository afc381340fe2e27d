#!/usr/bin/env bash
# Quick start, the main job: train a tiny ViT with AugMask on Fashion-MNIST
# (3 epochs, a few minutes on 2 CPU cores), validate on the 10k test set,
# and print where the checkpoint is and its top-1.
#   bash tools/run_demo.sh [extra tools/train.py arguments]
# FMNIST_ROOT=DIR uses Fashion-MNIST idx files from DIR instead of Debian's
# dataset-fashion-mnist package (installed with apt-get when missing);
# WORK_DIR=DIR picks the output folder (default work_dirs/demo/<time>).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
source "$REPO/tools/setup_env.sh"
cd "$REPO"
CONFIG=configs/demo/vit-tiny-p4_1xb128-augmask-3e_fashion-mnist.py
# A new folder per run: tools/train.py never overwrites earlier checkpoints.
WORK_DIR=${WORK_DIR:-work_dirs/demo/$(date +%Y%m%d_%H%M%S)}
exec "$PY" tools/train.py "$CONFIG" --work-dir "$WORK_DIR" \
    --cfg-options "train_dataloader.dataset.data_root=$FMNIST_ROOT" \
                  "val_dataloader.dataset.data_root=$FMNIST_ROOT" \
                  "test_dataloader.dataset.data_root=$FMNIST_ROOT" \
    "$@"
