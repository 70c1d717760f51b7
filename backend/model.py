"""The model Label Studio talks to: ``predict`` for pre-annotations, ``fit`` for events.

What it does today: ``predict`` serves the pre-annotation the scoring job stored for a task
(``<state dir>/predictions/<task id>.json``) and an empty prediction with ``score`` None for a
task not scored yet; ``fit`` only decides which background job an event calls for. The scoring
and training jobs themselves register as handlers of ``backend.jobs.JobQueue``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from backend.config import BackendConfig
from backend.storage import PredictionStore

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

    def __init__(self, config: BackendConfig, predictions: PredictionStore | None = None) -> None:
        self.config = config
        self.predictions = predictions or PredictionStore(config.state_dir / "predictions")

    @property
    def model_version(self) -> str:
        return self.config.model_version

    def setup(self, project: str, label_config: str | None) -> str:
        """Called when Label Studio connects a project; answers the version predictions will carry."""
        return self.model_version

    def predict(self, tasks: list[Mapping[str, Any]], context: Mapping[str, Any] | None = None, **kwargs: Any) -> list[dict[str, Any]]:
        """One prediction per task, in order: the stored pre-annotation, or an empty one."""
        return [self._prediction_for(task) for task in tasks]

    def fit(self, event: str, data: Mapping[str, Any]) -> str | None:
        """The job kind ``event`` calls for ("train", "score"), or None to ignore it."""
        return EVENT_JOBS.get(event)

    def _prediction_for(self, task: Mapping[str, Any]) -> dict[str, Any]:
        task_id = task.get("id")
        if isinstance(task_id, int) and not isinstance(task_id, bool):
            stored = self.predictions.get(task_id)
            if stored is not None:
                return stored
        return {"result": [], "score": None, "model_version": self.model_version}
