#!/usr/bin/env bash
# The test command of the README: sets up the environment on a fresh machine (tools/setup_env.sh) and
# the headless browser of the web demo's browser test (tools/setup_browser.sh: Debian's chromium and
# chromium-driver, needs root or sudo), then runs the whole test suite. Extra arguments go to pytest (e.g. -k metric).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/tools/setup_env.sh"
bash "$ROOT/tools/setup_browser.sh"
cd "$ROOT"
exec "${VENV:-$ROOT/.venv}/bin/python" -m pytest tests -q -p no:cacheprovider "$@"
