"""Publishing a batch of pre-annotations: the one sequence both jobs use, and its local record.

1. store each prediction locally (``/predict`` answers from this store);
2. create in Label Studio those of the batch's version it does not have yet, in bulk. Which tasks
   have it comes from the project's *published map* (task → (version, score), in the project's
   state file), checked against one count per version from Label Studio: when the two disagree
   (a crash mid-import, predictions deleted by hand, a state file from an older backend), the
   version is deleted and imported again whole, from the local store;
3. serve the project by that version (Label Studio accepts it only once predictions carry it);
4. run the caller's step that needs the new queue in place;
5. delete the versions the batch supersedes, one request each.

Each step is safe to repeat, so a job that stops anywhere converges when it runs again. Nothing
lists every prediction: a publish costs a few requests per thousand tasks.

The map holds no prediction ids: the import endpoint answers only how many it created, and
predictions are deleted a version at a time, so no step needs them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping
from typing import Any

from backend.jobs.state import ProjectStateStore
from backend.jobs.storage import PredictionStore
from backend.jobs.training_history import UNET_VERSION_PREFIX
from backend.labelstudio.client import ProjectClient
from backend.labelstudio.prefill import prefill_prediction

log = logging.getLogger(__name__)


def publish_predictions(
    project: ProjectClient,
    store: PredictionStore,
    states: ProjectStateStore,
    project_id: str,
    predictions: Mapping[int, Mapping[str, Any]],
    version: str,
    is_stale: Callable[[str | None], bool],
    after_serving: Callable[[], None] | None = None,
    task_ids: Collection[int] | None = None,
) -> int:
    """Publish ``predictions`` (task id → prediction, each with a numeric ``score``) as
    ``version``; returns how many stale predictions were deleted.

    ``task_ids``, when given, are the project's tasks now: map entries of other (deleted) tasks
    are dropped first, since Label Studio dropped their predictions with them.
    """
    store.put_many(predictions)
    published = dict(states.get(project_id).published)
    if task_ids is not None:
        present = set(task_ids)
        published = {t: entry for t, entry in published.items() if t in present}
    counts = project.version_counts()
    have = {t for t, (item_version, _) in published.items() if item_version == version}
    if counts.get(version, 0) != len(have):
        # Label Studio and the map disagree on this version: import it again whole.
        log.warning(
            "project %s: Label Studio holds %d prediction(s) of %s, the published map %d; "
            "re-importing the version",
            project_id,
            counts.get(version, 0),
            version,
            len(have),
        )
        predictions = {**_stored_of(store, have, version), **predictions}
        for task_id in have - predictions.keys():  # no local copy left: it leaves the map
            del published[task_id]
        if counts.get(version, 0):
            project.delete_version(version)
        have = set()
    missing = {t: p for t, p in predictions.items() if t not in have}
    project.create_predictions(missing)
    published.update({t: (version, float(p["score"])) for t, p in predictions.items()})
    states.update(project_id, published=published)  # the queue: written here only
    project.serve_by_prediction_score(version)
    if after_serving is not None:
        after_serving()
    deleted = 0
    for item_version, count in counts.items():
        if item_version != version and is_stale(item_version):
            project.delete_version(item_version)
            deleted += count
    return deleted


def publish_round(
    project: ProjectClient,
    store: PredictionStore,
    states: ProjectStateStore,
    project_id: str,
    results: Mapping[int, list[dict[str, Any]]],
    scores: Mapping[int, float],
    version: str,
) -> dict[int, dict[str, Any]]:
    """A training run's predictions (task → result items drawn by the UNet, task → score in the
    round's order) published as ``version``: the project serves it and records it as its served
    version, and earlier UNet versions are deleted (the cold-start batch stays). Returns the
    predictions."""
    # No cluster: Label Studio would serve the annotator's least-labelled cluster first.
    predictions = {
        task_id: prefill_prediction(results[task_id], version, scores[task_id])
        for task_id in results
    }
    publish_predictions(
        project,
        store,
        states,
        project_id,
        predictions,
        version,
        is_stale=lambda item_version: (item_version or "").startswith(UNET_VERSION_PREFIX),
        after_serving=lambda: states.set_served_version(project_id, version),
    )
    return predictions


def _stored_of(
    store: PredictionStore, task_ids: Collection[int], version: str
) -> dict[int, dict[str, Any]]:
    """The locally stored predictions of ``version`` among ``task_ids``."""
    found = {}
    for task_id in task_ids:
        stored = store.get(task_id)
        if stored is not None and stored.get("model_version") == version:
            found[task_id] = stored
    return found
