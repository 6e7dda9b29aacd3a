#!/usr/bin/env bash
# The test command of the README: sets up the environment on a fresh machine (tools/setup_env.sh), then
# runs the whole test suite. Extra arguments go to pytest (e.g. -k metric).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/tools/setup_env.sh"
cd "$ROOT"
exec "${VENV:-$ROOT/.venv}/bin/python" -m pytest tests -q -p no:cacheprovider "$@"
