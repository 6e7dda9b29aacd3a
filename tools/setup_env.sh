#!/usr/bin/env bash
# Create (or refresh) the project's virtual environment on a fresh machine: torch 2.13 (CPU wheel),
# mmcv 2.1.0 built from source with its ops, the OpenMMLab stack, and mmseg_ris in editable mode.
# Idempotent: a second run only checks. pip's cache (~/.cache/pip) keeps the built mmcv wheel, so a new
# environment on the same machine takes about a minute instead of ~12.
#
#   VENV=.venv  PYTHON=python3  TORCH_SPEC=torch==2.13.0  bash tools/setup_env.sh
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
STAMP="$VENV/.mmseg_ris_env"
# Changing a requirement file invalidates the stamp, so the environment follows the repository.
REQ_HASH="$(cat "$ROOT"/requirements/*.txt "$ROOT/setup.py" | sha1sum | cut -c1-12)"

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$REQ_HASH" ] \
   && "$VENV/bin/python" -c "import mmcv.ops, mmseg.models, mmdet, transformers, pycocotools, gradio, selenium, mmseg_ris" 2>/dev/null; then
  echo "[setup_env] $VENV is up to date"
  exit 0
fi

echo "[setup_env] preparing $VENV"
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip)
"${PIP[@]}" install -q "$TORCH_SPEC"
"${PIP[@]}" install -q -r "$ROOT/requirements/build.txt"
if ! "$VENV/bin/python" -c "import mmcv, mmcv.ops; assert mmcv.__version__ == '2.1.0'" 2>/dev/null; then
  echo "[setup_env] installing mmcv 2.1.0 with ops (first build on a machine: ~12 min on 2 cores; then cached)"
  MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-$(nproc)}" "${PIP[@]}" install --no-build-isolation -r "$ROOT/requirements/mmcv.txt"
fi
# demo.txt (Gradio web demo, Selenium for its browser test) in the same resolve: gradio asks for
# pillow<13, and resolving everything at once keeps one consistent Pillow.
"${PIP[@]}" install -q -r "$ROOT/requirements/runtime.txt" -r "$ROOT/requirements/tests.txt" \
  -r "$ROOT/requirements/demo.txt"
"${PIP[@]}" install -q --no-deps -r "$ROOT/requirements/optional.txt"
"${PIP[@]}" install -q --no-build-isolation --no-deps -e "$ROOT"
"$VENV/bin/python" -c "import mmcv.ops, mmseg.models, mmdet, transformers, pycocotools, gradio, selenium, mmseg_ris; \
print('[setup_env] ok: mmcv', mmcv.__version__, '| mmseg_ris', mmseg_ris.__version__)"
echo "$REQ_HASH" > "$STAMP"
