#!/usr/bin/env bash
# Quick start, the tests: installs what they need (see setup_env.sh), then
# runs the whole suite on the CPU. Arguments go to pytest and replace the
# default selection (setup.cfg's testpaths, i.e. tests/).
#   bash tools/run_tests.sh [tests/FILE ...] [-k PATTERN ...]
#   AUGSUB_STACK=onedl bash tools/run_tests.sh   # the onedl fork's stack
#   AUGSUB_TEST_WORKERS=N: pytest-xdist worker processes (default: one per
#       CPU core, at most 4); 1 runs the tests in this process (for --pdb).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
source "$REPO/tools/setup_env.sh"
cd "$REPO"
_cores=$(nproc 2>/dev/null || echo 1)
AUGSUB_TEST_WORKERS=${AUGSUB_TEST_WORKERS:-$((_cores < 4 ? _cores : 4))}
if ! [[ "$AUGSUB_TEST_WORKERS" =~ ^[1-9][0-9]*$ ]]; then
    echo "AUGSUB_TEST_WORKERS must be a number of processes (1 or more)," \
         "got '$AUGSUB_TEST_WORKERS'." >&2
    exit 2
fi
_xdist=()
if [ "$AUGSUB_TEST_WORKERS" -gt 1 ]; then
    # loadfile: a module's tests on one worker, so that a training run or
    # fresh environment they share (module-scoped fixtures) is built once
    # (loadgroup would allow finer units, but pytest-xdist 3.8 cannot mark
    # them on pytest 9.2); no reorder: the longest modules start first
    # (tests/conftest.py).
    _xdist=(-n "$AUGSUB_TEST_WORKERS" --dist loadfile --no-loadscope-reorder)
fi
# Temporary files in memory, unless TMPDIR is set: mmengine writes and
# removes a temporary folder for each file of each config it reads (20x
# slower on this machine's disk than in /dev/shm: 3.7 ms a folder against
# 0.18, test_configs.py 63 s instead of 71, 2026-12-03), and the tests'
# tmp_path folders (image folders, work dirs, checkpoints, test_wheel.py's
# fresh environment, full-size Swin checkpoints: 1.5 GB a run) are written
# and read once. Only where /dev/shm is writable with 4 GB free; the
# folders of passed tests are then removed at the end (memory, not disk).
_tmp=()
if [ -z "${TMPDIR:-}" ] && [ -d /dev/shm ] && [ -w /dev/shm ] &&
        [ "$(df -Pk /dev/shm 2>/dev/null | awk 'NR == 2 { print $4 }')" \
          -ge $((4 * 1024 * 1024)) ] 2>/dev/null; then
    export TMPDIR=/dev/shm
    _tmp=(-o tmp_path_retention_policy=failed)
fi
# Tiny models use threads poorly: one per process, processes in parallel
# (2 workers on 2 cores: the single-process tests took 126 s instead of
# 209 s with torch's default threads, 2026-12-03).
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
exec "$PY" -m pytest -q -p no:cacheprovider --durations=15 "${_xdist[@]}" \
    "${_tmp[@]}" "$@"
