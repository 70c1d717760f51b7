#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run the whole test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Style first (seconds): ruff's formatter and linter, configured in pyproject.toml.
.venv/bin/ruff format --check --quiet .
.venv/bin/ruff check --quiet .
exec .venv/bin/python -m pytest -ra "$@"
