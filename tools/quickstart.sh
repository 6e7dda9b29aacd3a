#!/usr/bin/env bash
# The main job of the README, end to end on the embedded default: set up the environment on a fresh
# machine, generate the synthetic RefCOCO-format dataset and check it, train the tiny LAVT on CPU for a
# bounded number of iterations, evaluate it on the val split, and write metrics (overall and per
# expression type) plus rendered predictions.
#
#   bash tools/quickstart.sh
#   NUM_IMAGES=500 MAX_ITERS=300 bash tools/quickstart.sh      # a shorter run
#   CONFIG=configs/magnet/magnet_tiny_synthetic.py bash tools/quickstart.sh   # the tiny MagNet instead
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/tools/setup_env.sh"
cd "$ROOT"
PY="${VENV:-$ROOT/.venv}/bin/python"
DATA="${DATA:-data/synthetic}"
WORK="${WORK:-work_dirs/quickstart}"
NUM_IMAGES="${NUM_IMAGES:-2000}"
SEED="${SEED:-0}"
CONFIG="${CONFIG:-configs/lavt/lavt_tiny_synthetic.py}"
# ~10 minutes of training on a 2-core CPU (docs/get_started.md has the measured figures)
MAX_ITERS="${MAX_ITERS:-1200}"
# linear warm-up: a tenth of the run, at most the schedule's 100 iterations, at least 1
WARMUP="${WARMUP:-$(( MAX_ITERS / 10 < 100 ? MAX_ITERS / 10 : 100 ))}"
[ "$WARMUP" -ge 1 ] || WARMUP=1
# --show-dir is relative to the run's work dir unless absolute: make it absolute
case "$WORK" in /*) WORK_ABS="$WORK" ;; *) WORK_ABS="$ROOT/$WORK" ;; esac
DATA_OPTS=("train_dataloader.dataset.data_root=$DATA/" "val_dataloader.dataset.data_root=$DATA/"
           "test_dataloader.dataset.data_root=$DATA/")

echo "[quickstart] 1/4 synthetic dataset -> $DATA"
"$PY" tools/dataset_converters/make_synthetic_refcoco.py --out "$DATA" --num-images "$NUM_IMAGES" --seed "$SEED"

echo "[quickstart] 2/4 dataset check -> $WORK/check"
"$PY" tools/analysis_tools/check_dataset.py configs/_base_/datasets/synthetic_refcoco.py \
  --splits train val testA testB --out-dir "$WORK/check" --num-render 6 --cfg-options "${DATA_OPTS[@]}"

echo "[quickstart] 3/4 train $CONFIG for $MAX_ITERS iterations -> $WORK/train"
"$PY" tools/train.py "$CONFIG" --work-dir "$WORK/train" --cfg-options "${DATA_OPTS[@]}" \
  "train_cfg.max_iters=$MAX_ITERS" "train_cfg.val_interval=$MAX_ITERS" \
  "param_scheduler.0.end=$WARMUP" "param_scheduler.1.begin=$WARMUP" "param_scheduler.1.end=$MAX_ITERS" \
  "default_hooks.checkpoint.interval=$MAX_ITERS"

echo "[quickstart] 4/4 evaluate on val -> $WORK/eval (metrics, per-sentence results, renders)"
"$PY" tools/test.py "$CONFIG" "$WORK/train/iter_${MAX_ITERS}.pth" --work-dir "$WORK/eval" \
  --out "$WORK/eval/results" --show-dir "$WORK_ABS/eval/renders" \
  --cfg-options "${DATA_OPTS[@]}" default_hooks.visualization.interval=60
"$PY" - "$WORK/eval/results/results.json" <<'PYEOF'
import json, sys
r = json.load(open(sys.argv[1]))
print(json.dumps({k: v for k, v in r.items() if k != 'settings'}, indent=1)[:3000])
PYEOF
echo "[quickstart] done: metrics in $WORK/eval/results/results.json, renders in $WORK/eval/renders"
