#!/usr/bin/env bash
# Quick start, the tests: installs what they need (see setup_env.sh), then
# runs the whole suite on the CPU. Arguments go to pytest and replace the
# default selection (setup.cfg's testpaths, i.e. tests/).
#   bash tools/run_tests.sh [tests/FILE ...] [-k PATTERN ...]
#   AUGSUB_STACK=onedl bash tools/run_tests.sh   # the onedl fork's stack
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
source "$REPO/tools/setup_env.sh"
cd "$REPO"
exec "$PY" -m pytest -q -p no:cacheprovider --durations=15 "$@"
