#!/usr/bin/env bash
# The main job of the README, end to end on the embedded default: set up the environment on a fresh
# machine, generate the synthetic RefCOCO-format dataset, and check it (counts, mask areas, token
# lengths, rendered samples).
#
#   bash tools/quickstart.sh                    # 2,000 images into data/synthetic
#   NUM_IMAGES=500 SEED=1 bash tools/quickstart.sh
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/tools/setup_env.sh"
cd "$ROOT"
PY="${VENV:-$ROOT/.venv}/bin/python"
DATA="${DATA:-data/synthetic}"
WORK="${WORK:-work_dirs/quickstart}"
NUM_IMAGES="${NUM_IMAGES:-2000}"
SEED="${SEED:-0}"

echo "[quickstart] 1/2 synthetic dataset -> $DATA"
"$PY" tools/dataset_converters/make_synthetic_refcoco.py --out "$DATA" --num-images "$NUM_IMAGES" --seed "$SEED"

echo "[quickstart] 2/2 dataset check -> $WORK/check"
"$PY" tools/analysis_tools/check_dataset.py configs/_base_/datasets/synthetic_refcoco.py \
  --splits train val testA testB --out-dir "$WORK/check" --num-render 6 \
  --cfg-options "train_dataloader.dataset.data_root=$DATA" "val_dataloader.dataset.data_root=$DATA"
echo "[quickstart] done: $WORK"
