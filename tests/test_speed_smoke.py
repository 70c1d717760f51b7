"""The GPU check script runs end to end on the CPU with tiny settings."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_gpu_check_smoke_runs_on_cpu() -> None:
    env = {**os.environ, "SKIP_SETUP": "1"}  # the test runs inside the environment setup.sh made
    done = subprocess.run(
        ["bash", "benchmarks/gpu_check.sh", "--device", "cpu", "--smoke"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1700,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert "default vs full: union IoU min" in out and "ratio" in out
    assert "authors:" in out and "project:" in out and "slices/s" in out
    assert out.rstrip().endswith("gpu_check done")
