"""The job queue: debounced per kind and project, capped, failures counted, pending jobs kept across
a restart, damaged state files survived, a worker thread that runs due jobs."""

from __future__ import annotations

import json
import logging

import pytest

from backend.jobs.queue import JobQueue


def test_job_waits_for_a_quiet_debounce_interval(tmp_path, clock):
    runs = []
    jobs = JobQueue(
        tmp_path,
        {"train": lambda job, progress: runs.append(job.events)},
        debounce_s=5.0,
        clock=clock,
    )
    jobs.submit("train", 1)  # t = 1000 → due 1005
    clock.now = 1004.0
    jobs.submit("train", 1)  # → due 1009
    clock.now = 1008.9
    assert jobs.run_due() == 0
    clock.now = 1009.0
    assert jobs.run_due() == 1
    assert runs == [2]
    assert jobs.pending() == []


def test_steady_stream_of_events_still_runs_by_the_cap(tmp_path, clock):
    runs = []
    jobs = JobQueue(
        tmp_path,
        {"train": lambda job, progress: runs.append(clock.now)},
        debounce_s=5.0,
        max_delay_s=20.0,
        clock=clock,
    )
    # An event every 4 s would push a plain debounce forever; the cap is created + 20 = 1020.
    for step in range(11):
        clock.now = 1000.0 + 4 * step
        jobs.submit("train", 1)
        jobs.run_due()
    assert runs == [1020.0]


def test_event_during_a_run_queues_a_fresh_job(tmp_path, clock):
    jobs = JobQueue(tmp_path, debounce_s=0.0, clock=clock)
    runs = []

    def train(job, progress):
        runs.append(job.events)
        if len(runs) == 1:
            assert jobs.submit("train", 1) is True  # the running job started from older data

    jobs.handlers["train"] = train
    jobs.submit("train", 1)
    assert jobs.run_due() == 2
    assert runs == [1, 1]


def test_failed_job_is_counted_and_the_queue_goes_on(tmp_path, clock):
    jobs = JobQueue(tmp_path, debounce_s=0.0, clock=clock)
    done = []
    jobs.handlers = {
        "train": lambda job, progress: 1 / 0,
        "score": lambda job, progress: done.append(job.project),
    }
    jobs.submit("train", 1)
    jobs.submit("score", 2)
    assert jobs.run_due() == 2
    snapshot = jobs.snapshot()
    assert (snapshot["completed"], snapshot["failed"], done) == (1, 1, ["2"])
    assert snapshot["last_error"] == "train job for project 1: ZeroDivisionError: division by zero"


def test_unknown_job_kind_is_refused(tmp_path):
    with pytest.raises(ValueError, match="job kind 'predict' is unknown"):
        JobQueue(tmp_path).submit("predict", 1)


def test_pending_jobs_survive_a_restart(tmp_path, clock):
    JobQueue(tmp_path, clock=clock).submit("train", 3)
    first = JobQueue(tmp_path, clock=clock)
    first.submit("score", 4)
    for _ in range(5):
        first.submit("train", 3)
    restarted = JobQueue(tmp_path, debounce_s=5.0, clock=clock)
    # The merged events count too: six events behind the train job, one behind the score job.
    assert sorted((job.kind, job.project, job.events) for job in restarted.pending()) == [
        ("score", "4", 1),
        ("train", "3", 6),
    ]
    state = json.loads((tmp_path / "jobs.json").read_text())
    assert sorted(
        (entry["kind"], entry["project"], entry["events"]) for entry in state["pending"]
    ) == [("score", "4", 1), ("train", "3", 6)]


def test_job_interrupted_by_a_restart_is_queued_again(tmp_path, clock):
    seen = {}

    def train(job, progress):
        # What a process started now (after a crash mid-job) would find on disk.
        seen["pending"] = [(j.kind, j.project) for j in JobQueue(tmp_path, clock=clock).pending()]

    jobs = JobQueue(tmp_path, {"train": train}, debounce_s=0.0, clock=clock)
    jobs.submit("train", 8)
    jobs.run_due()
    assert seen["pending"] == [("train", "8")]
    assert JobQueue(tmp_path, clock=clock).pending() == []  # finished → gone from the state file


def test_malformed_entries_in_the_state_file_are_skipped_and_the_rest_restored(tmp_path, caplog):
    entries = [
        {"kind": "train", "project": "3", "first_event": 12.5, "events": 4},  # good
        {"project": "5"},  # no kind
        {"kind": "score"},  # no project
        {"kind": "train", "project": "6", "events": "many"},  # events not a number
        {"kind": "train", "project": "7", "first_event": [1]},  # first_event not a number
        {"kind": "predict", "project": "8"},  # unknown kind
        "score 9",  # not an object at all
        None,
        {"kind": "score", "project": 10},  # good: a numeric project id is read as its string
    ]
    (tmp_path / "jobs.json").write_text(json.dumps({"version": 1, "pending": entries}))
    with caplog.at_level(logging.WARNING):
        restored = JobQueue(tmp_path).pending()
    assert sorted((job.kind, job.project, job.events) for job in restored) == [
        ("score", "10", 1),
        ("train", "3", 4),
    ]
    assert next(job for job in restored if job.project == "3").first_event == 12.5
    assert caplog.text.count("skipping malformed job entry") == 6
    assert "skipping job of unknown kind 'predict'" in caplog.text


@pytest.mark.parametrize(
    "payload", [[], "pending", {"pending": "train 3"}, {"pending": {"kind": "train"}}]
)
def test_state_file_of_the_wrong_shape_restores_nothing(tmp_path, payload):
    (tmp_path / "jobs.json").write_text(json.dumps(payload))
    jobs = JobQueue(tmp_path)
    assert jobs.pending() == []
    assert jobs.submit("train", 1)  # and the queue still works


def test_corrupt_state_file_is_ignored(tmp_path, caplog):
    (tmp_path / "jobs.json").write_text("{half a json")
    with caplog.at_level(logging.WARNING):
        assert JobQueue(tmp_path).pending() == []
    assert "unreadable state file" in caplog.text


def test_worker_thread_runs_a_due_job(tmp_path):
    import threading

    ran = threading.Event()
    jobs = JobQueue(tmp_path, {"score": lambda job, progress: ran.set()}, debounce_s=0.01)
    jobs.start()
    try:
        jobs.submit("score", 1)
        assert ran.wait(timeout=5)
    finally:
        jobs.stop()
    assert jobs.snapshot()["worker_alive"] is False
