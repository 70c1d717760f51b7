"""The model Label Studio talks to: ``predict`` for pre-annotations, ``job_for`` for events.

``predict`` serves the pre-annotation the scoring job stored for a task
(``<state dir>/predictions/<task id>.json``). A task not scored yet is scored on demand when the
model has a scorer: its union mask comes back with ``score`` None under the bare model version,
so it stays out of the batch's queue order until the next scoring job ranks it. It is stored only
when Label Studio holds that task with that image (one GET of the task): anyone who can reach
``/predict`` could otherwise plant a pre-annotation under any task id. On-demand scoring
stops starting new slices after ``predict_deadline_s`` (Label Studio abandons a /predict call after
about 100 s); later tasks of that call get an empty prediction. One slice costs K + 1 encoder and
everything-mode passes (seconds on a CPU, well under one on a GPU); a slice scored before, by the
job or an earlier call, is read from the record cache. ``job_for`` decides which background
job an event calls for (nothing is trained here); the jobs themselves are handlers of
``backend.jobs.queue.JobQueue``.

An interactive call (``context`` with a ``result``: a box or points drawn with a smart tool) is
answered instead with the model's mask for that prompt on the task's slice
(``backend.interactive``), never stored.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from backend.config import BackendConfig
from backend.interactive import InteractivePredictor
from backend.jobs.slice_scorer import SliceScorer
from backend.jobs.state import PROJECT_STATE_DIR, ProjectStateStore
from backend.jobs.storage import PredictionStore
from backend.labelstudio.brush import SegmentationControl, parse_label_config
from backend.labelstudio.connection import Connection, open_requests
from backend.labelstudio.images import ImageFetcher
from backend.labelstudio.prefill import prefill_prediction, region_results
from backend.labelstudio.prompts import check_regions, context_regions
from backend.redact import redact_url
from sugfw.errors import InvalidInputError, SugfwError

log = logging.getLogger(__name__)

ACCESS_CHECK_TTL_S = 60.0
"""Label Studio sends /setup on each visit of the model settings: one check a minute is enough."""
LABEL_STUDIO_TIMEOUT_S = 10.0


class LabelStudioAccessError(SugfwError):
    """Label Studio cannot be used for a project with the configured URL and key."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status
        """The HTTP status /setup answers with: 400 for a refused key or unknown project, 502 when
        Label Studio cannot be reached or fails."""


EVENT_JOBS = {
    "ANNOTATION_CREATED": "train",
    "ANNOTATION_UPDATED": "train",
    "ANNOTATIONS_DELETED": "train",
    "START_TRAINING": "train",
    # New or removed tasks change the pool, so the queue order must be recomputed.
    "TASKS_CREATED": "score",
    "TASKS_DELETED": "score",
}
"""Webhook action → background job; other actions are acknowledged and ignored."""


class SugfwModel:
    """Pre-annotations and queue order from sugfw, behind Label Studio's ML-backend entry points."""

    def __init__(
        self,
        config: BackendConfig,
        predictions: PredictionStore | None = None,
        scorer: SliceScorer | None = None,
        fetcher: Callable[[], ImageFetcher] | None = None,
        clock: Callable[[], float] = time.monotonic,
        label_studio_transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.config = config
        self.predictions = predictions or PredictionStore(config.state_dir / "predictions")
        self.scorer = scorer
        """Without one, tasks not scored by the job get an empty prediction."""
        self.fetcher = fetcher
        self.clock = clock
        self.projects = ProjectStateStore(config.state_dir / PROJECT_STATE_DIR)
        self._transport = label_studio_transport
        self._lock = threading.Lock()
        self._connection: Connection | None = None
        self._access_ok: dict[int, float] = {}
        self._interactive: InteractivePredictor | None = None

    @property
    def model_version(self) -> str:
        return self.config.model_version

    def setup(self, project: str, label_config: str | None) -> str:
        """Called when Label Studio connects a project (and whenever it reads the model's state).

        Answers the version the project's queue follows (cold-start batch, or UNet after training):
        Label Studio asks /predict only for
        tasks without a prediction of this version, so scored tasks are not predicted twice.
        """
        project_id = str(project).split(".", 1)[0]
        served = self.projects.served_version(project_id) if project_id.isdigit() else None
        return served or self.model_version

    def predict(
        self,
        tasks: list[Mapping[str, Any]],
        context: Mapping[str, Any] | None = None,
        label_config: str | None = None,
        **kwargs: Any,
    ) -> list[dict[str, Any]]:
        """One prediction per task, in order: stored, scored on demand, or empty.

        With an interactive ``context`` the first task gets the mask for the drawn prompt (empty
        when the prompt is unusable) and any further task an empty prediction.
        """
        # A malformed context is the caller's error (a 400 naming it), found before any work.
        regions = context_regions(context)
        if regions is not None:
            check_regions(regions, self.config.interactive_max_points)
            return self._interactive_predict(tasks, regions, label_config)
        deadline = self.clock() + self.config.predict_deadline_s
        on_demand = _OnDemand(self, label_config)
        try:
            results = []
            for task in tasks:
                stored = self._stored(task)
                if stored is None and self.clock() < deadline:
                    stored = on_demand.predict(task)
                results.append(stored if stored is not None else self.empty_prediction())
            return results
        finally:
            on_demand.close()

    def _interactive_predict(
        self, tasks: list[Mapping[str, Any]], regions: list[Any], label_config: str | None
    ) -> list[dict[str, Any]]:
        results = [self.empty_prediction() for _ in tasks]
        if not tasks or not regions:
            return results
        if self.scorer is None or label_config is None:
            log.warning("interactive prompt not answered: no model or no label config")
            return results
        with self._lock:
            if self._interactive is None:
                slices = self.config.interactive_cache_slices
                self._interactive = InteractivePredictor(self.scorer, slices)
        config = self.config
        fetcher = self.fetcher or (lambda: _default_fetcher(config))
        answer = self._interactive.predict(
            tasks[0], regions, label_config, fetcher, self.model_version
        )
        if answer is not None:
            results[0] = answer
        return results

    def check_access(self, project_id: int) -> None:
        """One authenticated GET of the project, so that a wrong key, URL or project id fails
        /setup (and Label Studio shows the error) instead of every later job.

        Without LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY there is nothing to check (logged).
        """
        if not self.label_studio_configured:
            log.warning(
                "LABEL_STUDIO_URL or LABEL_STUDIO_API_KEY is not set: cannot check access "
                "to project %s, and its jobs cannot run",
                project_id,
            )
            return
        checked = self._access_ok.get(project_id)
        if checked is not None and self.clock() - checked < ACCESS_CHECK_TTL_S:
            return
        where = redact_url(self.config.label_studio_url or "")
        response = self._label_studio_get(f"api/projects/{project_id}/")
        if response.status_code in (401, 403):
            raise LabelStudioAccessError(
                f"Label Studio at {where} refused LABEL_STUDIO_API_KEY "
                f"(HTTP {response.status_code}); start the backend with a valid key of a user of "
                "this project",
                400,
            )
        if response.status_code == 404:
            raise LabelStudioAccessError(
                f"Label Studio at {where} has no project {project_id} (HTTP 404); "
                "check LABEL_STUDIO_URL",
                400,
            )
        if response.status_code != 200:
            raise LabelStudioAccessError(
                f"Label Studio at {where} answered HTTP {response.status_code} for project "
                f"{project_id}",
                502,
            )
        self._access_ok[project_id] = self.clock()

    def task_known(self, task_id: int, image_key: str, image_url: Any) -> bool:
        """Whether Label Studio holds task ``task_id`` with ``image_url`` under ``image_key``."""
        if not self.label_studio_configured:
            return False
        try:
            response = self._label_studio_get(f"api/tasks/{task_id}/")
            data = response.json().get("data") if response.status_code == 200 else None
        except (LabelStudioAccessError, ValueError, AttributeError) as error:
            log.warning("cannot check task %s with Label Studio: %s", task_id, error)
            return False
        return isinstance(data, dict) and data.get(image_key) == image_url

    @property
    def label_studio_configured(self) -> bool:
        config = self.config
        return config.label_studio_url is not None and config.label_studio_api_key is not None

    def _label_studio_get(self, path: str) -> httpx.Response:
        url = (self.config.label_studio_url or "").rstrip("/")
        where = redact_url(url)
        try:
            with self._lock:
                if self._connection is None:
                    key = self.config.label_studio_api_key or ""
                    self._connection = open_requests(
                        url, key, LABEL_STUDIO_TIMEOUT_S, self._transport
                    )
            return self._connection.request("GET", path)
        except InvalidInputError as error:  # an expired token, or the exchange refused
            raise LabelStudioAccessError(f"Label Studio at {where}: {error}", 400) from None
        except httpx.HTTPError as error:
            raise LabelStudioAccessError(
                f"Label Studio at {where} cannot be reached: {type(error).__name__}", 502
            ) from None

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()

    def job_for(self, event: str) -> str | None:
        """The job kind a webhook ``event`` calls for ("train", "score"), or None to ignore it."""
        return EVENT_JOBS.get(event)

    def empty_prediction(self) -> dict[str, Any]:
        return {"result": [], "score": None, "model_version": self.model_version}

    def _stored(self, task: Mapping[str, Any]) -> dict[str, Any] | None:
        task_id = _task_id(task)
        return None if task_id is None else self.predictions.get(task_id)


class _OnDemand:
    """Scores the unscored tasks of one /predict call; the label config and fetcher only when
    needed."""

    def __init__(self, model: SugfwModel, label_config: str | None) -> None:
        self.model = model
        self.label_config = label_config
        self._control: SegmentationControl | None = None
        self._fetcher: ImageFetcher | None = None

    def predict(self, task: Mapping[str, Any]) -> dict[str, Any] | None:
        model, task_id = self.model, _task_id(task)
        if model.scorer is None or self.label_config is None or task_id is None:
            return None
        if self._control is None:
            self._control = parse_label_config(
                self.label_config
            )  # a config without a brush tag → 400
        try:
            if self._fetcher is None:  # inside the try: an expired key is refused right here
                self._fetcher = (
                    model.fetcher() if model.fetcher is not None else _default_fetcher(model.config)
                )
            image = self._fetcher.fetch(task, self._control.image_key)
            record = model.scorer.score(image, f"task-{task_id}")
        except SugfwError as error:
            log.warning("no prediction for task %s: %s", task_id, error)
            return None
        except Exception as error:  # one task's slice must not fail the others of this call
            log.warning("no prediction for task %s: %s", task_id, repr(error)[:300])
            return None
        prediction = prefill_prediction(
            region_results(record, self._control), model.model_version, None
        )
        data = task.get("data")
        url = data.get(self._control.image_key) if isinstance(data, Mapping) else None
        if model.task_known(task_id, self._control.image_key, url):
            # Only if absent: a scoring job that stored this task meanwhile (while this call
            # waited on the scorer) keeps its entry, whose score orders the queue.
            if not model.predictions.put_if_absent(task_id, prediction):
                stored = model.predictions.get(task_id)
                return stored if stored is not None else prediction
        else:
            log.info(
                "prediction for task %s answered, not stored: Label Studio does not hold "
                "this task with this image",
                task_id,
            )
        return prediction

    def close(self) -> None:
        if self._fetcher is not None:
            self._fetcher.close()


def _default_fetcher(config: BackendConfig) -> ImageFetcher:
    from backend.labelstudio.client import image_fetcher

    return image_fetcher(config)


def _task_id(task: Mapping[str, Any]) -> int | None:
    task_id = task.get("id")
    return task_id if isinstance(task_id, int) and not isinstance(task_id, bool) else None
