"""Publishing a batch of pre-annotations: the one sequence both jobs use.

1. store each prediction locally (``/predict`` answers from this store);
2. create in Label Studio those of the batch's version it does not have yet (a rerun after a
   crash creates only what is missing);
3. serve the project by that version (Label Studio accepts it only once predictions carry it);
4. run the caller's step that needs the new queue in place (e.g. writing priorities);
5. delete the predictions the batch supersedes.

Each step is safe to repeat, so a job that stops anywhere converges when it runs again.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from backend.jobs.storage import PredictionStore
from backend.labelstudio.client import ProjectClient


def publish_predictions(
    project: ProjectClient,
    store: PredictionStore,
    predictions: Mapping[int, Mapping[str, Any]],
    version: str,
    is_stale: Callable[[str | None], bool],
    after_serving: Callable[[], None] | None = None,
) -> int:
    """Publish ``predictions`` (task id → prediction) as ``version``; returns how many stale
    predictions were deleted."""
    for task_id, prediction in predictions.items():
        store.put(task_id, dict(prediction))
    existing = project.prediction_versions()
    have = {task_id for _, task_id, item_version in existing if item_version == version}
    project.create_predictions({t: p for t, p in predictions.items() if t not in have})
    project.serve_by_prediction_score(version)
    if after_serving is not None:
        after_serving()
    stale = [
        pid
        for pid, _, item_version in existing
        if item_version != version and is_stale(item_version)
    ]
    if stale:
        project.delete_predictions(stale)
    return len(stale)
