"""One background worker, a de-duplicating queue of (kind, project) jobs, and its state on disk.

Label Studio sends one webhook per annotation, so a burst of submissions must become one training
run, not fifty. Each job is keyed by (kind, project): an event for a key that is already pending
only pushes its start back by the debounce interval (capped, so a steady stream still trains).
An event that arrives while the same key is running queues a fresh job, because the running one
started from older data. Pending jobs, and the running one, are written to ``jobs.json`` so that
a restart picks them up again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backend.jobs.storage import read_json
from sugfw.atomic import atomic_write_json

log = logging.getLogger(__name__)

JOB_KINDS = ("score", "train")
STATE_FILE = "jobs.json"
STATE_VERSION = 1


@dataclass
class Job:
    kind: str
    project: str
    first_event: float
    """Wall-clock time (epoch seconds) of the first event behind this job."""
    created: float
    """Monotonic time the job was queued (or restored); the debounce cap counts from here."""
    due: float
    """Monotonic time at which the job may start."""
    events: int = 1

    @property
    def key(self) -> tuple[str, str]:
        return self.kind, self.project


@dataclass
class Progress:
    """What the running job reports; handlers call :meth:`update` as they go."""

    job: Job
    started: float = field(default_factory=time.time)
    done: int = 0
    total: int | None = None

    def update(self, done: int, total: int | None = None) -> None:
        self.done = done
        if total is not None:
            self.total = total

    def as_dict(self) -> dict[str, Any]:
        return {
            "job": self.job.kind,
            "project": self.job.project,
            "done": self.done,
            "total": self.total,
            "started": self.started,
        }


JobHandler = Callable[[Job, Progress], None]


class JobQueue:
    """De-duplicating queue drained by a single worker thread, one job at a time."""

    def __init__(
        self,
        state_dir: Path,
        handlers: Mapping[str, JobHandler] | None = None,
        debounce_s: float = 5.0,
        max_delay_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.state_path = Path(state_dir) / STATE_FILE
        self.handlers = dict(handlers or {})
        self.debounce_s = debounce_s
        # Without a cap, annotations arriving every few seconds would postpone training forever.
        self.max_delay_s = max_delay_s if max_delay_s is not None else max(12 * debounce_s, 60.0)
        self.clock = clock
        self.run_lock = threading.Lock()
        """Held while a job runs; anything else that must not overlap a job (e.g. loading weights) takes it too."""
        self._pending: dict[tuple[str, str], Job] = {}
        self._running: Progress | None = None
        self._finished = {"completed": 0, "failed": 0}
        self._last_error: str | None = None
        self._condition = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._restore()

    # -- events ---------------------------------------------------------------------------------

    def submit(self, kind: str, project: str | int) -> bool:
        """Queue (kind, project), or merge into the pending job with that key; True when new."""
        if kind not in JOB_KINDS:
            raise ValueError(f"job kind {kind!r} is unknown; expected one of {JOB_KINDS}")
        key = (kind, str(project))
        now = self.clock()
        with self._condition:
            job = self._pending.get(key)
            if job is None:
                self._pending[key] = Job(kind, str(project), time.time(), now, now + self.debounce_s)
            else:
                job.events += 1
                job.due = min(now + self.debounce_s, job.created + self.max_delay_s)
            self._save_locked()  # merged events too: a restart must not forget how many there were
            self._condition.notify_all()
            return job is None

    def pending(self) -> list[Job]:
        with self._condition:
            return sorted(self._pending.values(), key=lambda job: job.due)

    def snapshot(self) -> dict[str, Any]:
        """Progress and queue contents for ``/metrics``."""
        with self._condition:
            now = self.clock()
            return {
                "running": self._running.as_dict() if self._running else None,
                "pending": [
                    {"job": job.kind, "project": job.project, "events": job.events, "starts_in_s": round(max(0.0, job.due - now), 3)}
                    for job in sorted(self._pending.values(), key=lambda job: job.due)
                ],
                **self._finished,
                "last_error": self._last_error,
                "worker_alive": bool(self._thread and self._thread.is_alive()),
            }

    # -- running --------------------------------------------------------------------------------

    def run_due(self) -> int:
        """Run every job whose time has come, in due order, on the calling thread; the count run."""
        count = 0
        while True:
            with self.run_lock:  # taken before the job is picked, so two callers never interleave
                progress = self._take_due()
                if progress is None:
                    return count
                self._run(progress)
            count += 1

    def start(self) -> None:
        """Start the worker thread (idempotent)."""
        with self._condition:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stopping = False
            self._thread = threading.Thread(target=self._work, name="sugfw-jobs", daemon=True)
            self._thread.start()

    def stop(self, timeout: float | None = 10.0) -> None:
        """Ask the worker to finish its current job and exit; pending jobs stay on disk."""
        with self._condition:
            self._stopping = True
            self._condition.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    def _work(self) -> None:
        while True:
            with self._condition:
                while not self._stopping:
                    wait = self._seconds_to_next()
                    if wait is not None and wait <= 0:
                        break
                    self._condition.wait(timeout=wait)
                if self._stopping:
                    return
            self.run_due()

    def _seconds_to_next(self) -> float | None:
        if not self._pending:
            return None
        return min(job.due for job in self._pending.values()) - self.clock()

    def _take_due(self) -> Progress | None:
        with self._condition:
            now = self.clock()
            due = [job for job in self._pending.values() if job.due <= now]
            if not due:
                return None
            job = min(due, key=lambda item: item.due)
            del self._pending[job.key]
            self._running = Progress(job)
            self._save_locked()
            return self._running

    def _run(self, progress: Progress) -> None:
        job = progress.job
        handler = self.handlers.get(job.kind)
        try:
            if handler is None:
                log.warning("no handler for %s jobs yet; dropping the job for project %s", job.kind, job.project)
            else:
                log.info("starting %s job for project %s (%d event(s))", job.kind, job.project, job.events)
                handler(job, progress)
            outcome, error = "completed", None
        except Exception as exc:  # a failed job must not kill the worker
            log.exception("%s job for project %s failed", job.kind, job.project)
            outcome, error = "failed", f"{job.kind} job for project {job.project}: {type(exc).__name__}: {exc}"
        with self._condition:
            self._finished[outcome] += 1
            if error is not None:
                self._last_error = error
            self._running = None
            self._save_locked()

    # -- state file -----------------------------------------------------------------------------

    def _save_locked(self) -> None:
        jobs = list(self._pending.values())
        if self._running is not None:
            jobs.append(self._running.job)  # interrupted by a restart → run again
        payload = {
            "version": STATE_VERSION,
            "pending": [{"kind": job.kind, "project": job.project, "first_event": job.first_event, "events": job.events} for job in jobs],
        }
        try:
            atomic_write_json(self.state_path, payload)
        except OSError as error:
            # The queue still works in memory; only restart recovery is lost.
            log.error("cannot write job state %s: %s", self.state_path, error)

    def _restore(self) -> None:
        payload = read_json(self.state_path)
        if not isinstance(payload, dict):
            return
        now = self.clock()
        for entry in payload.get("pending", []):
            try:
                kind, project = str(entry["kind"]), str(entry["project"])
                first_event, events = float(entry.get("first_event", time.time())), int(entry.get("events", 1))
            except (KeyError, TypeError, ValueError):
                log.warning("skipping malformed job entry in %s: %r", self.state_path, entry)
                continue
            if kind not in JOB_KINDS:
                log.warning("skipping job of unknown kind %r in %s", kind, self.state_path)
                continue
            self._pending[(kind, project)] = Job(kind, project, first_event, now, now + self.debounce_s, events)
        if self._pending:
            log.info("re-queued %d job(s) from %s", len(self._pending), self.state_path)
