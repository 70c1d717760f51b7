"""The job queue under faults: transient failures retried with backoff, crash loops set aside,
one worker per state folder, progress with rate and ETA."""

from __future__ import annotations

import httpx
import pytest
from label_studio_sdk.core.api_error import ApiError

from backend.jobs.queue import (
    MAX_CRASH_STARTS,
    MAX_RETRIES,
    JobQueue,
    Progress,
    WorkerLockError,
    is_transient,
    retry_delay,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (httpx.ConnectError("refused"), True),
        (httpx.ReadTimeout("slow"), True),
        (ApiError(status_code=502, body="bad gateway"), True),
        (ApiError(status_code=429, body="slow down"), True),
        (ApiError(status_code=404, body="no such project"), False),
        (ApiError(status_code=401, body="bad key"), False),
        (ValueError("bad data"), False),
    ],
)
def test_what_counts_as_transient(error, transient):
    assert is_transient(error) is transient


def test_backoff_doubles_up_to_five_minutes():
    assert [retry_delay(r) for r in range(8)] == [5, 10, 20, 40, 80, 160, 300, 300]


def test_label_studio_down_is_retried_with_backoff_then_succeeds(tmp_path):
    clock = Clock()
    calls = []

    def handler(job, progress):
        calls.append(clock.now)
        if len(calls) <= 2:
            raise httpx.ConnectError("connection refused")

    jobs = JobQueue(tmp_path, {"score": handler}, debounce_s=0.0, clock=clock)
    jobs.submit("score", 7)
    assert jobs.run_due() == 1  # fails, re-queued 5 s later
    assert [(j.kind, j.project, j.retries) for j in jobs.pending()] == [("score", "7", 1)]
    clock.now += 4.9
    assert jobs.run_due() == 0
    clock.now += 0.1
    assert jobs.run_due() == 1  # fails again, next try 10 s later
    clock.now += 10.0
    assert jobs.run_due() == 1  # succeeds
    assert calls == [1000.0, 1005.0, 1015.0]
    snapshot = jobs.snapshot()
    assert (snapshot["completed"], snapshot["failed"], snapshot["retried"]) == (1, 0, 2)
    assert jobs.pending() == []


def test_a_retry_survives_a_restart(tmp_path):
    clock = Clock()

    def down(job, progress):
        raise httpx.ConnectError("connection refused")

    JobQueue(tmp_path, {"score": down}, debounce_s=0.0, clock=clock).submit("score", 3)
    first = JobQueue(tmp_path, {"score": down}, debounce_s=0.0, clock=clock)
    first.run_due()
    restarted = JobQueue(tmp_path, debounce_s=0.0, clock=clock)
    assert [(j.project, j.retries) for j in restarted.pending()] == [("3", 1)]


def test_retries_stop_after_the_limit(tmp_path):
    clock = Clock()
    jobs = JobQueue(
        tmp_path,
        {"score": lambda job, progress: (_ for _ in ()).throw(httpx.ConnectError("down"))},
        debounce_s=0.0,
        clock=clock,
    )
    jobs.submit("score", 1)
    for _ in range(MAX_RETRIES + 1):
        clock.now += 1000.0
        jobs.run_due()
    snapshot = jobs.snapshot()
    assert (snapshot["retried"], snapshot["failed"]) == (MAX_RETRIES, 1)
    assert jobs.pending() == []


def test_a_data_error_is_not_retried(tmp_path):
    clock = Clock()

    def broken(job, progress):
        raise ValueError("label config has no brush")

    jobs = JobQueue(tmp_path, {"train": broken}, debounce_s=0.0, clock=clock)
    jobs.submit("train", 2)
    assert jobs.run_due() == 1
    assert jobs.pending() == []
    assert jobs.snapshot()["failed"] == 1
    assert "label config has no brush" in jobs.snapshot()["last_error"]


def _crash_during(tmp_path, clock) -> None:
    """Start the due job and 'die': the queue object is dropped while the job runs."""

    class Died(BaseException):
        pass

    def dies(job, progress):
        raise Died  # not an Exception: stands for the process being killed mid-job

    queue = JobQueue(tmp_path, {"score": dies}, debounce_s=0.0, clock=clock)
    with pytest.raises(Died):
        queue.run_due()


def test_a_job_that_keeps_killing_the_backend_is_set_aside(tmp_path):
    clock = Clock()
    JobQueue(tmp_path, debounce_s=0.0, clock=clock).submit("score", 5)
    for _ in range(MAX_CRASH_STARTS - 1):
        _crash_during(tmp_path, clock)
        assert [j.starts for j in JobQueue(tmp_path, clock=clock).pending()] != []
    _crash_during(tmp_path, clock)
    restarted = JobQueue(tmp_path, debounce_s=0.0, clock=clock)
    assert restarted.pending() == []
    (aside,) = restarted.snapshot()["set_aside"]
    assert (aside["job"], aside["project"]) == ("score", "5")
    assert f"{MAX_CRASH_STARTS} times" in aside["reason"]
    # Still set aside after another restart, until a new event comes.
    again = JobQueue(tmp_path, debounce_s=0.0, clock=clock)
    assert len(again.snapshot()["set_aside"]) == 1
    assert again.submit("score", 5) is True
    assert again.snapshot()["set_aside"] == []
    assert [(j.project, j.starts) for j in again.pending()] == [("5", 0)]


def test_a_second_worker_on_the_same_state_folder_refuses_to_start(tmp_path):
    first = JobQueue(tmp_path)
    first.start()
    try:
        second = JobQueue(tmp_path)
        with pytest.raises(WorkerLockError, match="in use by backend worker pid"):
            second.start()
    finally:
        first.stop()
    third = JobQueue(tmp_path)  # the lock is released on stop
    third.start()
    third.stop()


def test_progress_reports_rate_and_eta(tmp_path):
    jobs = JobQueue(tmp_path)
    jobs.submit("score", 1)
    progress = Progress(jobs.pending()[0])
    progress._started_monotonic -= 10.0  # ten seconds in
    progress.update(25, 100)
    summary = progress.as_dict()
    assert summary["rate_per_s"] == pytest.approx(2.5, rel=0.01)
    assert summary["eta_s"] == pytest.approx(30.0, rel=0.01)
    assert progress.summary().startswith("25/100, 2.5")


class Gated:
    """A handler that says whether its project needs a job."""

    def __init__(self, answer) -> None:
        self.answer, self.asked, self.ran = answer, 0, 0

    def up_to_date(self, project: str) -> bool:
        self.asked += 1
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer

    def __call__(self, job, progress) -> None:
        self.ran += 1


def test_a_gated_submit_queues_nothing_when_nothing_changed(tmp_path):
    handler = Gated(True)
    jobs = JobQueue(tmp_path, {"score": handler}, debounce_s=0.0, clock=Clock())
    assert jobs.submit("score", 4, gated=True) is False
    assert jobs.pending() == [] and handler.asked == 1
    assert jobs.submit("score", 4) is True  # an event (e.g. tasks created) always queues


def test_a_gated_submit_queues_when_something_changed_or_cannot_tell(tmp_path):
    for answer in (False, httpx.ConnectError("down")):
        handler = Gated(answer)
        jobs = JobQueue(tmp_path / str(type(answer).__name__), {"score": handler}, clock=Clock())
        assert jobs.submit("score", 4, gated=True) is True
        # Already pending: merged without asking again.
        assert jobs.submit("score", 4, gated=True) is False
        assert handler.asked == 1 and len(jobs.pending()) == 1


def test_sigterm_hands_the_running_job_back_without_counting_a_crash(tmp_path):
    """A real backend process, its score job blocked on a Label Studio that never answers, gets
    SIGTERM (docker stop): it exits cleanly and the job is pending again with no start counted,
    so ordinary restarts can never set it aside."""
    import json
    import os
    import signal
    import socket
    import subprocess
    import sys
    import time
    from pathlib import Path

    silent = socket.create_server(("127.0.0.1", 0))  # accepts, never answers
    state = tmp_path / "state"
    state.mkdir()
    (state / "jobs.json").write_text(
        json.dumps({"pending": [{"kind": "score", "project": "3", "starts": MAX_CRASH_STARTS - 1}]})
    )
    port = silent.getsockname()[1]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        backend_port = probe.getsockname()[1]
    env = {**os.environ, "LABEL_STUDIO_API_KEY": "0" * 40, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "backend._wsgi", "--port", str(backend_port)]
    command += ["--state-dir", str(state), "--label-studio-url", f"http://127.0.0.1:{port}"]
    command += ["--debounce", "0"]
    log = tmp_path / "backend.log"
    repo = Path(__file__).resolve().parents[2]
    with log.open("wb") as out:
        process = subprocess.Popen(command, env=env, cwd=repo, stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + 120
        while b"starting score job for project 3" not in log.read_bytes():
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.2)
        saved = json.loads((state / "jobs.json").read_text())
        assert saved["pending"][0]["starts"] == MAX_CRASH_STARTS  # counted while it runs
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0, log.read_text()[-2000:]
    finally:
        if process.poll() is None:
            process.kill()
        silent.close()
    (job,) = json.loads((state / "jobs.json").read_text())["pending"]
    assert (job["kind"], job["project"], job["starts"]) == ("score", "3", MAX_CRASH_STARTS - 1)
    assert JobQueue(state, {}).snapshot()["set_aside"] == []  # the next start runs it
