"""The main job keeps Label Studio up when the backend dies: the backend is restarted."""

from __future__ import annotations

import subprocess
import sys

from backend.local import server as local_server
from backend.local.launch import supervise


def process(code: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code])


def test_a_dead_backend_is_restarted_and_label_studio_keeps_running(tmp_path):
    label_studio = process("import time; time.sleep(60)")
    started = []

    def restart():
        # The first two replacements die at once, the third keeps running until Label Studio stops.
        started.append(
            process("raise SystemExit(3)" if len(started) < 2 else "import time; time.sleep(60)")
        )
        if len(started) == 3:
            label_studio.terminate()
        return started[-1]

    try:
        status = supervise(
            label_studio,
            process("raise SystemExit(9)"),
            restart,
            tmp_path / "ls.log",
            tmp_path / "backend.log",
            max_restarts=5,
            poll_s=0.05,
        )
    finally:
        for p in [label_studio, *started]:
            if p.poll() is None:
                p.kill()
    assert status == 1  # ended because Label Studio stopped, not the backend
    assert len(started) == 3


def test_a_backend_that_keeps_dying_ends_the_main_job(tmp_path, caplog):
    label_studio = process("import time; time.sleep(60)")
    started = []

    def restart():
        started.append(process("raise SystemExit(1)"))
        return started[-1]

    try:
        status = supervise(
            label_studio,
            process("raise SystemExit(1)"),
            restart,
            tmp_path / "ls.log",
            tmp_path / "backend.log",
            max_restarts=2,
            poll_s=0.05,
        )
        assert label_studio.poll() is None  # supervise never stops Label Studio itself
    finally:
        label_studio.kill()
    assert status == 1
    assert len(started) == 2
    assert "stopped 3 times; giving up" in caplog.text


def test_a_backend_that_fails_to_come_back_is_tried_again(tmp_path):
    label_studio = process("import time; time.sleep(60)")
    attempts = []

    def restart():
        attempts.append(1)
        if len(attempts) == 1:
            raise local_server.LabelStudioStartError("no /health within 120 s")
        label_studio.terminate()
        attempts.append(process("import time; time.sleep(60)"))
        return attempts[-1]

    try:
        supervise(
            label_studio,
            process("raise SystemExit(1)"),
            restart,
            tmp_path / "ls.log",
            tmp_path / "backend.log",
            max_restarts=3,
            poll_s=0.05,
        )
    finally:
        label_studio.kill()
        attempts[-1].kill()
    assert len(attempts) == 3  # a failed start, a good one, and its process
