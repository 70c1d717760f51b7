#!/usr/bin/env bash
# GPU check: install, run the CUDA tests, print scoring throughput and peak GPU memory.
#
#   bash benchmarks/gpu_check.sh                    # on a CUDA machine (about 5 minutes on an H100)
#   bash benchmarks/gpu_check.sh --device cpu --smoke   # end to end on tiny settings, anywhere
#
# Prints, on the same LA2018 slices (synthetic slices when the data is absent): LiteMedSAM at its
# defaults with K = 2 and K = 10 (full-decoding reference against the IoU-first default, with
# union IoU and |ΔÛ| between them), and SAM ViT-B with random weights at 32 × 32 points, K = 10,
# for the authors' procedure (SamAutomaticMaskGenerator per view) and this project's path.
# SKIP_SETUP=1 skips `bash scripts/setup.sh` (an existing .venv is used as it is).
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICE=cuda
SMOKE=0
while [ $# -gt 0 ]; do
  case "$1" in
    --device) DEVICE="$2"; shift 2 ;;
    --smoke) SMOKE=1; shift ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
DATA="${DATA:-/work/shared/data/la2018}"
[ -d "$DATA" ] || DATA=../shared/data/la2018
if [ "${SKIP_SETUP:-0}" != 1 ]; then
  bash scripts/setup.sh
fi
PY="$PWD/.venv/bin/python"
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"
if [ "$DEVICE" = cpu ] && [ "$SMOKE" = 1 ]; then
  SPEED=(--slices 1 --k 1 --grid 128)
  SAM=(--slices 1 --k 1 --points 4)
else
  "$PY" -m pytest tests/sugfw/test_gpu_cuda.py tests/sugfw/test_decoder.py \
    -q -rs -p no:cacheprovider
  SPEED=(--slices 4 --k 2 10)
  SAM=(--slices 2 --k 10 --points 32)
  [ "$SMOKE" = 1 ] && SPEED=(--slices 1 --k 1 --grid 128) && SAM=(--slices 1 --k 1 --points 4)
fi
cd benchmarks
echo "== LiteMedSAM: full-decoding reference vs IoU-first default =="
"$PY" bench_speed.py --data "$DATA" --device "$DEVICE" --paths full default "${SPEED[@]}"
echo "== SAM ViT-B (random weights): authors' procedure vs this project's path =="
"$PY" bench_scoring.py --data "$DATA" --device "$DEVICE" --paths authors project "${SAM[@]}"
echo "gpu_check done"
