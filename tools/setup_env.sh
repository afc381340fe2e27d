#!/usr/bin/env bash
# Source me. Creates the project's virtual environment (.venv, or
# $AUGSUB_VENV) when missing, installs the pinned stack and augsub_mm when
# the requirement files changed since the last install, and prepares the
# Fashion-MNIST files when missing. Nothing slow runs twice.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${AUGSUB_VENV:-$REPO/.venv}
PY=$VENV/bin/python
export FMNIST_ROOT=${FMNIST_ROOT:-$REPO/data/fashion_mnist}

_pip_quiet() {
    # pip warns once per local index folder it does not use; keep errors.
    "$PY" -m pip "$@" 2>&1 | { grep -v '^WARNING: Location' || true; }
    return "${PIPESTATUS[0]}"
}

if [ ! -x "$PY" ]; then
    echo "Creating the virtual environment $VENV ..."
    "${PYTHON:-python3}" -m venv "$VENV"
fi
_stamp="$VENV/.augsub_installed"
_want=$(cat "$REPO/requirements/local.txt" "$REPO/requirements/runtime.txt" \
        "$REPO/setup.py" | sha256sum | cut -d' ' -f1)
if [ "$(cat "$_stamp" 2>/dev/null || true)" != "$_want" ]; then
    echo "Installing torch, mmengine, mmcv-lite, mmpretrain and augsub_mm into $VENV (once) ..."
    _pip_quiet install -q -r "$REPO/requirements/local.txt"
    _pip_quiet install -q -e "$REPO"
    echo "$_want" > "$_stamp"
fi

if [ "${AUGSUB_SKIP_DATA:-0}" != 1 ]; then
    "$PY" -c "import sys; from augsub_mm.utils import prepare_fashion_mnist as p; p(sys.argv[1])" \
        "$FMNIST_ROOT" 2> >(grep -v -i 'warn' >&2)
fi
