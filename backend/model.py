"""The model Label Studio talks to: ``predict`` for pre-annotations, ``fit`` for events.

``predict`` serves the pre-annotation the scoring job stored for a task
(``<state dir>/predictions/<task id>.json``). A task not scored yet is scored on demand when the
model has a scorer: its union mask comes back with ``score`` None under the bare model version,
so it stays out of the batch's queue order until the next scoring job ranks it. On-demand scoring
stops starting new slices after ``predict_deadline_s`` (Label Studio abandons a /predict call after
about 100 s); later tasks of that call get an empty prediction. One slice costs K + 1 encoder and
everything-mode passes (seconds on a CPU, well under one on a GPU); a slice scored before, by the
job or an earlier call, is read from the record cache. ``fit`` only decides which background job
an event calls for; the jobs themselves are handlers of ``backend.jobs.queue.JobQueue``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from backend.labelstudio.brush import SegmentationControl, mask_to_result, parse_label_config
from backend.config import BackendConfig
from backend.labelstudio.images import ImageFetcher
from backend.labelstudio.prefill import prefill_prediction
from backend.jobs.slice_scorer import SliceScorer
from backend.jobs.storage import PROJECT_STATE_DIR, PredictionStore, ProjectStateStore
from sugfw.errors import SugfwError

log = logging.getLogger(__name__)

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
    ) -> None:
        self.config = config
        self.predictions = predictions or PredictionStore(config.state_dir / "predictions")
        self.scorer = scorer
        """Without one, tasks not scored by the job get an empty prediction."""
        self.fetcher = fetcher
        self.clock = clock
        self.projects = ProjectStateStore(config.state_dir / PROJECT_STATE_DIR)

    @property
    def model_version(self) -> str:
        return self.config.model_version

    def setup(self, project: str, label_config: str | None) -> str:
        """Called when Label Studio connects a project (and whenever it reads the model's state).

        Answers the version the project's queue follows (cold-start batch, or UNet after training): Label Studio asks /predict only for
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
        """One prediction per task, in order: stored, scored on demand, or empty."""
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

    def fit(self, event: str, data: Mapping[str, Any]) -> str | None:
        """The job kind ``event`` calls for ("train", "score"), or None to ignore it."""
        return EVENT_JOBS.get(event)

    def empty_prediction(self) -> dict[str, Any]:
        return {"result": [], "score": None, "model_version": self.model_version}

    def _stored(self, task: Mapping[str, Any]) -> dict[str, Any] | None:
        task_id = _task_id(task)
        return None if task_id is None else self.predictions.get(task_id)


class _OnDemand:
    """Scores the unscored tasks of one /predict call; the label config and fetcher only when needed."""

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
            self._control = parse_label_config(self.label_config)  # a config without a brush tag → 400
        if self._fetcher is None:
            self._fetcher = model.fetcher() if model.fetcher is not None else _default_fetcher(model.config)
        try:
            image = self._fetcher.fetch(task, self._control.image_key)
            record = model.scorer.score(image, f"task-{task_id}")
        except SugfwError as error:
            log.warning("no prediction for task %s: %s", task_id, error)
            return None
        prediction = prefill_prediction(mask_to_result(record.union_mask, self._control), model.model_version, None)
        model.predictions.put(task_id, prediction)
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
