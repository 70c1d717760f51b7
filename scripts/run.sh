#!/usr/bin/env bash
# Set up and run the main job: a local Label Studio (SQLite) plus the sugfw backend, a project
# created from label_config.xml with slices of the given volumes, connected and scored.
# Usage: bash scripts/run.sh [VOLUMES_DIR] [extra flags for python -m backend.local.launch]
#   VOLUMES_DIR  NIfTI volumes, MSD layout found by itself (default: $SUGFW_DATA or ../shared/data/la2018)
# Prints the URL and login; Ctrl-C stops both servers. Data, login and logs: runs/labelstudio/.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA="${1:-${SUGFW_DATA:-../shared/data/la2018}}"
shift || true
if [ ! -e "$DATA" ]; then
  echo "no data at $DATA: pass a folder of NIfTI volumes as the first argument" >&2
  exit 2
fi
bash scripts/setup.sh
# Defaults sized for a 2-core CPU: 24 slices (every 11th of the first 3 volumes), K=2, a budget of
# 25 %: the queue is ready about 2.5 minutes after start once both environments are set up.
exec .venv/bin/python -m backend.local.launch "$DATA" --slice-step 11 --limit 24 --k 2 --budget 0.25 "$@"
