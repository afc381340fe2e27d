#!/usr/bin/env bash
# Download, where pip can reach PyPI, the wheels gpu_check.py needs on a GPU
# machine that has Python 3.12, torch and the scientific stack but not the
# OpenMMLab stack and cannot fetch anything: the pinned upstream stack
# (requirements/local.txt) and the pure-Python packages it needs that such an
# image lacks. All are py3-none-any wheels, about 6 MB together.
#   bash tools/analysis_tools/gpu_check_wheels.sh [DIR]   (default: .whl)
# There: pip install --no-index --no-deps --target /tmp/site DIR/*.whl, and
# PYTHONPATH=/tmp/site (docs/performance.md#gpu-check gives the command).
set -euo pipefail
DIR=${1:-.whl}
PYTHON=${PYTHON:-python3}
mkdir -p "$DIR"
"$PYTHON" -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 \
    --platform manylinux2014_x86_64 --platform any -d "$DIR" \
    mmengine==0.10.7 mmcv-lite==2.2.0 mmpretrain==1.2.0 \
    addict==2.4.0 yapf==0.43.0 platformdirs termcolor mat4py==0.6.0 \
    modelindex==0.0.2 model-index==0.1.11 ordered-set==4.1.0 \
    importlib-metadata lazy-importer
ls -l "$DIR"
