"""One background worker, a de-duplicating queue of (kind, project) jobs, and its state on disk.

Label Studio sends one webhook per annotation, so a burst of submissions must become one training
run, not fifty. Each job is keyed by (kind, project): an event for a key that is already pending
only pushes its start back by the debounce interval (capped, so a steady stream still trains).
An event that arrives while the same key is running queues a fresh job, because the running one
started from older data. Pending jobs, and the running one, are written to ``jobs.json`` so that
a restart picks them up again.

Faults:
- a job that fails on a transient cause (Label Studio unreachable, timing out or answering 5xx /
  429) is retried with exponential backoff instead of dropped;
- a job is counted each time it starts; one that was running when the process died
  ``MAX_CRASH_STARTS`` times is set aside (listed in ``/metrics`` with its reason) instead of
  taking the backend down again; a new event for it queues it afresh;
- one worker per state folder: ``start`` takes an exclusive lock on ``worker.lock`` and refuses
  to start when another process holds it.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backend.jobs.storage import read_json
from sugfw.atomic import atomic_write_json
from sugfw.errors import SugfwError

log = logging.getLogger(__name__)

JOB_KINDS = ("score", "train")
STATE_FILE = "jobs.json"
STATE_VERSION = 1
LOCK_FILE = "worker.lock"
MAX_CRASH_STARTS = 3
"""Starts of one job that ended with the process gone, before it is set aside."""
MAX_SET_ASIDE = 100
"""Set-aside jobs remembered (the oldest forgotten first): the state file stays small."""
MAX_RETRIES = 8
RETRY_BASE_S = 5.0
RETRY_CAP_S = 300.0
PROGRESS_LOG_EVERY_S = 30.0


class WorkerLockError(SugfwError):
    """Another process already runs the job worker on this state folder."""


def is_transient(error: BaseException) -> bool:
    """Whether ``error`` is worth retrying: the network or Label Studio failed, not the data."""
    import httpx

    if isinstance(error, (httpx.TransportError, ConnectionError, TimeoutError)):
        return True
    status = getattr(error, "status_code", None)  # the SDK's ApiError, httpx.HTTPStatusError
    if status is None and isinstance(error, httpx.HTTPStatusError):
        status = error.response.status_code
    return isinstance(status, int) and (status >= 500 or status == 429)


def error_kind(error: BaseException) -> str:
    """The kind of ``error`` and its HTTP status, if any: what /metrics shows by default."""
    status = getattr(error, "status_code", None)
    return type(error).__name__ + (f" (HTTP {status})" if isinstance(status, int) else "")


def retry_delay(retries: int) -> float:
    """Seconds before retry number ``retries + 1``: 5, 10, 20, ... capped at 5 minutes."""
    return min(RETRY_BASE_S * 2**retries, RETRY_CAP_S)


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
    starts: int = 0
    """Times this job has been started (kept across restarts)."""
    retries: int = 0
    """Transient failures so far."""

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
    _last_log: float = field(default_factory=time.monotonic)
    _started_monotonic: float = field(default_factory=time.monotonic)

    def update(self, done: int, total: int | None = None) -> None:
        self.done = done
        if total is not None:
            self.total = total
        now = time.monotonic()
        if now - self._last_log >= PROGRESS_LOG_EVERY_S:
            self._last_log = now
            log.info("%s job for project %s: %s", self.job.kind, self.job.project, self.summary())

    def rate(self) -> float | None:
        """Steps per second since the job started."""
        elapsed = time.monotonic() - self._started_monotonic
        return self.done / elapsed if elapsed > 0 and self.done else None

    def eta_s(self) -> float | None:
        rate = self.rate()
        if rate is None or self.total is None:
            return None
        return max(self.total - self.done, 0) / rate

    def summary(self) -> str:
        """ "done/total, rate, ETA" for the log."""
        rate, eta = self.rate(), self.eta_s()
        parts = [f"{self.done}/{self.total if self.total is not None else '?'}"]
        if rate is not None:
            parts.append(f"{rate:.2f}/s")
        if eta is not None:
            parts.append(f"ETA {eta:.0f} s")
        return ", ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        rate, eta = self.rate(), self.eta_s()
        return {
            "job": self.job.kind,
            "project": self.job.project,
            "done": self.done,
            "total": self.total,
            "started": self.started,
            "rate_per_s": round(rate, 3) if rate is not None else None,
            "eta_s": round(eta, 1) if eta is not None else None,
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
        """Held while a job runs; anything else that must not overlap a job (e.g. loading
        weights) takes it too."""
        self._pending: dict[tuple[str, str], Job] = {}
        self._running: Progress | None = None
        self._finished = {"completed": 0, "failed": 0, "retried": 0}
        self._last_error: str | None = None
        self._last_error_brief: str | None = None
        self._set_aside: dict[tuple[str, str], dict[str, Any]] = {}
        self._lock_handle: Any = None
        self._condition = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._restore()

    # -- events ---------------------------------------------------------------------------------

    def submit(self, kind: str, project: str | int, gated: bool = False) -> bool:
        """Queue (kind, project), or merge into the pending job with that key; True when new.

        With ``gated``, a job that is neither pending nor running is not queued when its handler's
        ``up_to_date(project)`` says there is nothing to do (``/setup`` is sent on every visit of
        the model settings page; most of those calls change nothing).
        """
        if kind not in JOB_KINDS:
            raise ValueError(f"job kind {kind!r} is unknown; expected one of {JOB_KINDS}")
        key = (kind, str(project))
        if gated:
            with self._condition:
                if key in self._set_aside:
                    return False  # only a real event brings a set-aside job back
            if not self._busy(key) and self._up_to_date(kind, str(project)):
                log.info("%s job for project %s: nothing changed, not queued", kind, project)
                return False
        now = self.clock()
        with self._condition:
            if self._set_aside.pop(key, None) is not None:
                log.info(
                    "new event for the set-aside %s job of project %s: queued again", kind, project
                )
            job = self._pending.get(key)
            if job is None:
                self._pending[key] = Job(
                    kind, str(project), time.time(), now, now + self.debounce_s
                )
            else:
                job.events += 1
                job.due = min(now + self.debounce_s, job.created + self.max_delay_s)
            self._save_locked()  # merged events too: a restart must not forget how many there were
            self._condition.notify_all()
            return job is None

    def _busy(self, key: tuple[str, str]) -> bool:
        with self._condition:
            running = self._running.job.key if self._running is not None else None
            return key in self._pending or key == running

    def _up_to_date(self, kind: str, project: str) -> bool:
        check = getattr(self.handlers.get(kind), "up_to_date", None)
        if check is None:
            return False
        try:
            return bool(check(project))
        except Exception as error:  # cannot tell (Label Studio down, ...): let the job decide
            log.warning("cannot tell whether project %s needs a %s job: %s", project, kind, error)
            return False

    def revive(self, project: str | int) -> bool:
        """Queue again every set-aside job of ``project`` (``/setup`` of the project: someone is
        looking at it); True when one was."""
        project = str(project)
        with self._condition:
            keys = [key for key in self._set_aside if key[1] == project]
        for kind, _ in keys:
            self.submit(kind, project)
        return bool(keys)

    def interrupt(self) -> None:
        """The process is being stopped on purpose (SIGTERM): the running job is written back
        as pending without counting this start, so a restart runs it again and an ordinary
        restart is never taken for a crash."""
        with self._condition:
            self._stopping = True
            if self._running is not None:
                job = self._running.job
                job.starts = max(job.starts - 1, 0)
                log.info(
                    "stopping: the running %s job for project %s will run again after the restart",
                    job.kind,
                    job.project,
                )
            self._save_locked()
            self._condition.notify_all()

    def pending(self) -> list[Job]:
        with self._condition:
            return sorted(self._pending.values(), key=lambda job: job.due)

    def snapshot(self, detail: bool = True) -> dict[str, Any]:
        """Progress and queue contents for ``/metrics``; without ``detail`` the last error is only
        its kind (a failed request's message can carry Label Studio's whole response)."""
        with self._condition:
            now = self.clock()
            return {
                "running": self._running.as_dict() if self._running else None,
                "pending": [
                    {
                        "job": job.kind,
                        "project": job.project,
                        "events": job.events,
                        "starts_in_s": round(max(0.0, job.due - now), 3),
                    }
                    for job in sorted(self._pending.values(), key=lambda job: job.due)
                ],
                **self._finished,
                "last_error": self._last_error if detail else self._last_error_brief,
                "set_aside": list(self._set_aside.values()),
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
        """Start the worker thread (idempotent); ``WorkerLockError`` if another process runs one
        on the same state folder (two workers would run every job twice)."""
        with self._condition:
            if self._thread is not None and self._thread.is_alive():
                return
            self._take_worker_lock()
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
        if self._lock_handle is not None and not (self._thread and self._thread.is_alive()):
            self._lock_handle.close()  # closing the file releases the lock
            self._lock_handle = None

    def _take_worker_lock(self) -> None:
        if self._lock_handle is not None:
            return
        path = self.state_path.parent / LOCK_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = path.open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise WorkerLockError(
                f"state folder {path.parent} is in use by backend worker pid {holder}; "
                "run one backend per state folder (SUGFW_STATE_DIR)"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._lock_handle = handle

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
            if self._stopping:
                return None
            now = self.clock()
            due = [job for job in self._pending.values() if job.due <= now]
            if not due:
                return None
            job = min(due, key=lambda item: item.due)
            del self._pending[job.key]
            job.starts += 1  # saved before the job runs: a crash mid-job is counted
            self._running = Progress(job)
            self._save_locked()
            return self._running

    def _run(self, progress: Progress) -> None:
        job = progress.job
        handler = self.handlers.get(job.kind)
        try:
            if handler is None:
                log.warning(
                    "no handler for %s jobs yet; dropping the job for project %s",
                    job.kind,
                    job.project,
                )
            else:
                log.info(
                    "starting %s job for project %s (%d event(s))",
                    job.kind,
                    job.project,
                    job.events,
                )
                handler(job, progress)
            outcome, error = "completed", None
        except Exception as exc:  # a failed job must not kill the worker
            brief = f"{job.kind} job for project {job.project}: {error_kind(exc)}"
            error = f"{brief}: {exc}"
            if is_transient(exc) and job.retries < MAX_RETRIES:
                delay = retry_delay(job.retries)
                log.warning(
                    "%s; retry %d of %d in %.0f s", error, job.retries + 1, MAX_RETRIES, delay
                )
                outcome = "retried"
            else:
                log.exception("%s job for project %s failed", job.kind, job.project)
                outcome = "failed"
        with self._condition:
            if outcome != "completed" and self._stopping and job.key not in self._pending:
                # Failed while the process stops (its connections closing): the stop's doing,
                # so the job waits for the restart as interrupt() left it.
                self._pending[job.key] = job
                self._running = None
                self._save_locked()
                return
            self._finished[outcome] += 1
            if error is not None:
                self._last_error, self._last_error_brief = error, brief
            if outcome == "retried" and job.key not in self._pending:
                job.retries += 1
                job.starts = 0  # it ended cleanly: not a crash
                job.due = self.clock() + retry_delay(job.retries - 1)
                self._pending[job.key] = job
                self._condition.notify_all()
            self._running = None
            self._save_locked()

    # -- state file -----------------------------------------------------------------------------

    def _save_locked(self) -> None:
        jobs = list(self._pending.values())
        if self._running is not None:
            jobs.append(self._running.job)  # interrupted by a restart → run again
        payload = {
            "version": STATE_VERSION,
            "pending": [
                {
                    "kind": job.kind,
                    "project": job.project,
                    "first_event": job.first_event,
                    "events": job.events,
                    "starts": job.starts,
                    "retries": job.retries,
                }
                for job in jobs
            ],
            "set_aside": list(self._set_aside.values())[-MAX_SET_ASIDE:],
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
                first_event, events = (
                    float(entry.get("first_event", time.time())),
                    int(entry.get("events", 1)),
                )
                starts, retries = int(entry.get("starts", 0)), int(entry.get("retries", 0))
            except (KeyError, TypeError, ValueError):
                log.warning("skipping malformed job entry in %s: %r", self.state_path, entry)
                continue
            if kind not in JOB_KINDS:
                log.warning("skipping job of unknown kind %r in %s", kind, self.state_path)
                continue
            if starts >= MAX_CRASH_STARTS:
                reason = f"the backend stopped during this job {starts} times; set aside"
                log.error(
                    "%s job for project %s: %s (a new event queues it again)", kind, project, reason
                )
                self._set_aside[(kind, project)] = {
                    "job": kind,
                    "project": project,
                    "reason": reason,
                }
                continue
            self._pending[(kind, project)] = Job(
                kind, project, first_event, now, now + self.debounce_s, events, starts, retries
            )
        for entry in payload.get("set_aside", []):
            if isinstance(entry, dict) and {"job", "project", "reason"} <= set(entry):
                key = (str(entry["job"]), str(entry["project"]))
                self._set_aside.setdefault(
                    key, {k: str(entry[k]) for k in ("job", "project", "reason")}
                )
        if self._pending:
            log.info("re-queued %d job(s) from %s", len(self._pending), self.state_path)
