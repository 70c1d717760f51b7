#!/usr/bin/env bash
# Set up and run the main job on embedded defaults: score LA2018 slices with LiteMedSAM, then
# order them with GSCU. Usage: bash scripts/run.sh [DATA_DIR] [OUT_DIR]
#   DATA_DIR  volumes in MSD layout or a folder of slices (default: $SUGFW_DATA or ../shared/data/la2018)
#   OUT_DIR   results (default: runs/main)
set -euo pipefail
cd "$(dirname "$0")/.."
DATA="${1:-${SUGFW_DATA:-../shared/data/la2018}}"
OUT="${2:-runs/main}"
[ -d "$DATA/imagesTr" ] && DATA="$DATA/imagesTr"
if [ ! -e "$DATA" ]; then
  echo "no data at $DATA: pass a folder of NIfTI volumes or PNG slices as the first argument" >&2
  exit 2
fi
bash scripts/setup.sh
# Defaults sized for a few minutes on a 2-core CPU: every 11th slice of the first volume (8 slices), K=4.
.venv/bin/sugfw score "$DATA" --out "$OUT" --limit "${SUGFW_LIMIT:-8}" --slice-step "${SUGFW_SLICE_STEP:-11}" \
  --k "${SUGFW_K:-4}" --save-preview "$OUT/preview.png"
.venv/bin/sugfw select "$OUT/records.npz" --budget "${SUGFW_BUDGET:-3}" --out "$OUT/queue.csv"
echo "annotation queue: $OUT/queue.csv   preview: $OUT/preview.png"
