#!/usr/bin/env bash
# Quick start, the tests: installs what they need (see setup_env.sh), then
# runs the whole suite on the CPU. Extra arguments go to pytest.
#   bash tools/run_tests.sh [-k PATTERN ...]
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
source "$REPO/tools/setup_env.sh"
cd "$REPO"
exec "$PY" -m pytest tests -q -p no:cacheprovider "$@"
