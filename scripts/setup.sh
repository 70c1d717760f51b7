#!/usr/bin/env bash
# Create .venv (once) and install sugfw with its test dependencies. Safe to rerun.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -r requirements-dev.txt
.venv/bin/python -m pip install --quiet --no-deps -e .
# Headless Chromium for the labelling-page test (tests/live/test_labeling_page_browser.py) comes
# from the distribution's packages (Playwright's own browser download is not used); the test skips
# without it.
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } \
      >/dev/null 2>&1 || echo "setup.sh: could not install chromium; the browser test will skip" >&2
  else
    echo "setup.sh: chromium not found (needs apt-get as root); the browser test will skip" >&2
  fi
fi
