#!/usr/bin/env bash
# Source me. Creates the project's virtual environment when missing, installs
# the pinned stack and augsub_mm (editable) when the requirement files
# changed since the last install, and prepares the Fashion-MNIST files when
# missing. Nothing slow runs twice.
#   AUGSUB_STACK=openmmlab (default): upstream mmengine 0.10.7, mmcv-lite
#       2.2.0, mmpretrain 1.2.0 (requirements/local.txt) in .venv;
#   AUGSUB_STACK=onedl: the maintained fork, onedl-mmengine 0.10.12,
#       onedl-mmcv 2.3.6, onedl-mmpretrain 1.3.6 (requirements/local-onedl.txt)
#       in .venv-onedl.
#   AUGSUB_DEEPSPEED=1 also installs DeepSpeed (requirements/deepspeed.txt),
#       so that its tests run instead of being skipped.
#   AUGSUB_TORCH_FROM=DIR takes torch, torchvision and their requirements
#       from the environment DIR (e.g. .venv) instead of installing them
#       again: tools/layer_env.py links them in (CI's onedl step does; the
#       two stacks pin the same torch).
#   AUGSUB_VENV=DIR picks another environment, PYTHON=python3.X the
#   interpreter that creates it.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
AUGSUB_STACK=${AUGSUB_STACK:-openmmlab}
case "$AUGSUB_STACK" in
    openmmlab) _req=requirements/local.txt; _venv=.venv ;;
    onedl) _req=requirements/local-onedl.txt; _venv=.venv-onedl ;;
    *) echo "AUGSUB_STACK must be openmmlab or onedl, got '$AUGSUB_STACK'" >&2
       exit 2 ;;
esac
VENV=${AUGSUB_VENV:-$REPO/$_venv}
PY=$VENV/bin/python
export FMNIST_ROOT=${FMNIST_ROOT:-$REPO/data/fashion_mnist}

_pip_quiet() {
    # pip warns once per local index folder it does not use; keep errors.
    "$PY" -m pip "$@" 2>&1 | { grep -v '^WARNING: Location' || true; }
    return "${PIPESTATUS[0]}"
}

AUGSUB_TORCH_FROM=${AUGSUB_TORCH_FROM:-}
if [ -n "$AUGSUB_TORCH_FROM" ]; then
    AUGSUB_TORCH_FROM=$(cd "$REPO" && cd "$AUGSUB_TORCH_FROM" 2>/dev/null \
                        && pwd) || true
    if [ ! -x "$AUGSUB_TORCH_FROM/bin/python" ]; then
        echo "AUGSUB_TORCH_FROM must be a virtual environment with torch" \
             "installed (e.g. .venv after bash tools/run_tests.sh); it has" \
             "no bin/python. Unset it to install torch into $VENV." >&2
        exit 2
    fi
fi
if [ ! -x "$PY" ]; then
    echo "Creating the virtual environment $VENV ..."
    if [ -n "$AUGSUB_TORCH_FROM" ]; then
        # The interpreter torch's extensions were built for.
        _base=$("$AUGSUB_TORCH_FROM/bin/python" -c \
                'import sys; print(sys._base_executable)')
        "$_base" -m venv "$VENV"
    else
        "${PYTHON:-python3}" -m venv "$VENV"
    fi
fi
_stamp="$VENV/.augsub_installed"
AUGSUB_DEEPSPEED=${AUGSUB_DEEPSPEED:-0}
_reqs=(-r "$REPO/$_req")
[ "$AUGSUB_DEEPSPEED" = 1 ] && _reqs+=(-r "$REPO/requirements/deepspeed.txt")
_want=$( (cat "$REPO/$_req" "$REPO"/requirements/*.txt "$REPO/setup.py" \
              "${BASH_SOURCE[0]}";
          echo "deepspeed=$AUGSUB_DEEPSPEED torch_from=$AUGSUB_TORCH_FROM") |
        sha256sum | cut -d' ' -f1)
if [ "$(cat "$_stamp" 2>/dev/null || true)" != "$_want" ]; then
    if [ -n "$AUGSUB_TORCH_FROM" ]; then
        "$AUGSUB_TORCH_FROM/bin/python" "$REPO/tools/layer_env.py" "$PY"
    elif [ -d "$VENV/augsub-layer" ]; then
        # Installed with AUGSUB_TORCH_FROM before: pip would take the
        # linked torch as installed.
        echo "$VENV takes torch from another environment" \
             "(AUGSUB_TORCH_FROM); set it again, or remove $VENV to install" \
             "torch into it." >&2
        exit 2
    fi
    echo "Installing the $AUGSUB_STACK stack ($_req) and augsub_mm into $VENV (once) ..."
    # One resolution: DeepSpeed, when asked for, within the stack's pins,
    # and augsub_mm without an extra (the stack above is the one
    # installed, whichever it is); one pip run instead of two saves ~5 s.
    _pip_quiet install -q "${_reqs[@]}" -e "$REPO"
    # transformers (requirements/tests.txt: the HuggingFaceClassifier
    # tests) and DeepSpeed (AUGSUB_DEEPSPEED=1) move out of site-packages
    # into side folders, $VENV/hf-site and $VENV/ds-site, which the test
    # processes put on their sys.path (tests/conftest.py) and the DeepSpeed
    # launches on their PYTHONPATH (tests/test_engine/test_flexible_runner.py):
    # wherever they are importable, mmengine imports both at every start
    # (transformers to register its Adafactor, DeepSpeed for its strategy:
    # 0.5 and 0.4 CPU-s a process), and a suite run starts hundreds of
    # processes that use neither. Their requirements stay installed.
    for _side in transformers:hf-site deepspeed:ds-site; do
        _pkg=${_side%%:*} _dir="$VENV/${_side#*:}"
        _ver=$("$PY" -c 'import importlib.metadata as m, sys
print(m.version(sys.argv[1]))' "$_pkg" 2>/dev/null || true)
        if [ -n "$_ver" ]; then
            rm -rf "$_dir"
            _pip_quiet install -q --no-deps --target "$_dir" "$_pkg==$_ver"
            _pip_quiet uninstall -q -y "$_pkg"
        fi
    done
    echo "$_want" > "$_stamp"
fi

_fmnist_missing() {
    local f
    for f in train-images-idx3-ubyte train-labels-idx1-ubyte \
             t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
        [ -f "$FMNIST_ROOT/$f" ] || [ -f "/usr/share/datasets/fashion-mnist/$f.gz" ] \
            || return 0
    done
    return 1
}

if [ "${AUGSUB_SKIP_DATA:-0}" != 1 ]; then
    # The library never installs system packages; this script does, once,
    # when it may (root, Debian's apt-get).
    if _fmnist_missing && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
        echo "Installing Debian's dataset-fashion-mnist with apt-get ..."
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null || true
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
            dataset-fashion-mnist >/dev/null || true
    fi
    PYTHONWARNINGS=ignore "$PY" -c \
        "import sys; from augsub_mm.utils import prepare_fashion_mnist as p; p(sys.argv[1])" \
        "$FMNIST_ROOT"
fi
