"""The "score" job: score every task of a project, order them with GSCU, write the queue to Label Studio.

Steps, each safe to repeat after a restart:
1. list the project's tasks and read the segmentation control from its live labelling config;
2. fetch each task's image and score it (the record cache under the state dir makes a rerun skip
   every slice already scored); a task whose image cannot be fetched or read is logged and left out;
3. GSCU over all scored tasks (``backend.jobs.ranking``);
4. one prediction per task, the union mask as pre-annotation, ``score`` = queue position divided by
   the number of scored tasks (Label Studio refuses scores outside [0, 1]; the order is the same),
   ``cluster`` = GSCU cluster, all under one ``model_version`` that names the batch (model, settings,
   budget, seed, task ids and pixels): the same batch always gets the same version, so a rerun only
   creates the predictions still missing;
5. the project serves tasks by that version's scores; each task's ``data.priority`` holds its
   queue position (tasks left out go last, in id order) for the Data Manager tab sorted by it;
6. predictions of earlier cold-start batches are deleted: Label Studio reads a task's cluster as
   the maximum over all its predictions, so stale ones would misplace it.

Label Studio calls ``/setup`` (and so queues this job) whenever its model settings are read, so a
rerun must be cheap: an image whose URL has not changed since the last published batch is not
downloaded again (its record comes from the cache by the content hash remembered with the URL),
and a batch identical to the published one only re-asserts the project's queue settings.

Progress counts every task twice: once when scored, once when its priority is written.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from typing import Any, NamedTuple

from backend.labelstudio.brush import SegmentationControl, mask_to_result, parse_label_config
from backend.config import BackendConfig
from backend.labelstudio.images import ImageFetcher
from backend.jobs.queue import Job, Progress
from backend.labelstudio.client import PRIORITY_FIELD, ProjectClient, image_fetcher
from backend.labelstudio.prefill import prefill_prediction
from backend.jobs.ranking import STRATEGY, plan_queue
from backend.jobs.slice_scorer import SliceScorer
from backend.jobs.publish import publish_predictions
from backend.jobs.storage import PROJECT_STATE_DIR, PredictionStore, ProjectStateStore
from backend.jobs.training_history import UNET_VERSION_PREFIX
from sugfw.cache import settings_key
from sugfw.errors import SugfwError
from sugfw.records import SliceRecord
from sugfw.selection import Selection

log = logging.getLogger(__name__)


def task_slice_id(task_id: int) -> str:
    return f"task-{task_id}"


def queue_score(rank: int, n: int) -> float:
    """Prediction score of queue position ``rank`` among ``n``: in [0, 1), ascending with the rank."""
    return rank / n


class ScoredTask(NamedTuple):
    task_id: int
    record: SliceRecord
    """Without its union mask and uncertainty map: thousands of full-size masks would not fit in memory."""
    result: list[dict[str, Any]]
    """The union mask as Label Studio result items."""


class ScoreJob:
    """Handler of ``("score", project)`` jobs for :class:`backend.jobs.queue.JobQueue`."""

    def __init__(
        self,
        config: BackendConfig,
        scorer: SliceScorer,
        predictions: PredictionStore,
        connect: Callable[[int], ProjectClient] | None = None,
        fetcher: Callable[[], ImageFetcher] | None = None,
        states: ProjectStateStore | None = None,
    ) -> None:
        self.config = config
        self.scorer = scorer
        self.predictions = predictions
        self.states = states or ProjectStateStore(config.state_dir / PROJECT_STATE_DIR)
        self.connect = connect or (lambda project_id: ProjectClient.connect(config, project_id))
        self.fetcher = fetcher or (lambda: image_fetcher(config))

    def __call__(self, job: Job, progress: Progress) -> None:
        project = self.connect(int(job.project))
        try:
            self.run(job, project, progress)
        finally:
            project.close()

    def run(self, job: Job, project: ProjectClient, progress: Progress) -> None:
        control = parse_label_config(project.label_config())
        tasks = project.tasks()
        progress.update(0, 2 * len(tasks))
        published = self.states.get(job.project)
        scored, skipped, images = self.score_tasks(tasks, control, progress, published.get("images", {}))
        if not scored:
            log.warning("project %s: none of its %d task(s) could be scored; queue left unchanged", job.project, len(tasks))
            return
        records = [item.record for item in scored]
        selection = plan_queue(records, self.config.budget, self.config.seed)
        version = self.batch_version(scored, selection)
        log.info(
            "project %s: %d task(s) scored, %d skipped; GSCU with %d cluster(s) → version %s",
            job.project, len(scored), len(skipped), selection.n_selected, version,
        )
        ranks = {item.task_id: int(rank) for item, rank in zip(scored, selection.ranks())}
        if version == published.get("model_version"):
            log.info("project %s: queue unchanged since it was published as %s", job.project, version)
            # Re-assert what the queue follows (a UNet version after training), in case someone
            # changed the sampling by hand.
            project.serve_by_prediction_score(self.states.served_version(job.project) or version)
            self.write_priorities(project, tasks, ranks, skipped, progress)
            return
        predictions = {
            item.task_id: prefill_prediction(item.result, version, queue_score(ranks[item.task_id], len(scored)), int(cluster))
            for item, cluster in zip(scored, selection.clusters)
        }
        deleted = publish_predictions(
            project, self.predictions, predictions, version,
            is_stale=lambda item_version: self.is_earlier_batch(item_version, version),
            after_serving=lambda: self.write_priorities(project, tasks, ranks, skipped, progress),
        )
        if deleted:
            log.info("project %s: deleted %d prediction(s) of earlier batches", job.project, deleted)
        self.states.put(job.project, {"model_version": version, "served_version": version, "images": images})
        log.info("project %s: queue of %d task(s) published as %s", job.project, len(predictions), version)

    def score_tasks(
        self,
        tasks: list[dict[str, Any]],
        control: SegmentationControl,
        progress: Progress,
        known_images: dict[str, list[str]],
    ) -> tuple[list[ScoredTask], list[int], dict[str, list[str]]]:
        """Every task that could be scored, the ids of those that could not, and {task id: [URL, hash]}."""
        scored, skipped, images = [], [], {}
        fetcher = self.fetcher()
        try:
            for done, task in enumerate(tasks, start=1):
                try:
                    record, url = None, task["data"].get(control.image_key)
                    known = known_images.get(str(task["id"]))
                    if known is not None and known[0] == url:
                        record = self.scorer.cached(known[1], task_slice_id(task["id"]))
                    if record is None:
                        image = fetcher.fetch(task, control.image_key)
                        record = self.scorer.score(image, task_slice_id(task["id"]))
                    images[str(task["id"])] = [url, record.content_hash]
                    result = mask_to_result(record.union_mask, control)
                    record.union_mask = record.uncertainty_map = None
                    scored.append(ScoredTask(task["id"], record, result))
                except SugfwError as error:  # a bad image costs its task, never the job
                    log.warning("skipping task %s: %s", task["id"], error)
                    skipped.append(task["id"])
                progress.update(done)
        finally:
            fetcher.close()
        return scored, skipped, images

    def batch_version(self, scored: list[ScoredTask], selection: Selection) -> str:
        """``<model version>-<hash>``: equal for the same model, settings, budget, seed, tasks and pixels."""
        batch = {
            "scorer": settings_key(self.scorer.identity()),
            "strategy": STRATEGY,
            "clusters": selection.n_selected,
            "seed": self.config.seed,
            "tasks": [[item.task_id, item.record.content_hash] for item in scored],
        }
        digest = hashlib.sha256(json.dumps(batch, sort_keys=True).encode()).hexdigest()
        return f"{self.config.model_version}-{digest[:10]}"

    @staticmethod
    def write_priorities(
        project: ProjectClient, tasks: list[dict[str, Any]], ranks: dict[int, int], skipped: list[int], progress: Progress
    ) -> None:
        """Queue positions as numeric task data (tasks left out follow, in id order), and the tab sorted by them."""
        priority = dict(ranks)
        priority.update({task_id: len(ranks) + j for j, task_id in enumerate(skipped)})
        for done, task in enumerate(tasks, start=len(tasks) + 1):
            value = priority[task["id"]]
            current = task["data"].get(PRIORITY_FIELD)
            if not (isinstance(current, int) and not isinstance(current, bool) and current == value):
                project.set_task_data(task["id"], {**task["data"], PRIORITY_FIELD: value})
            progress.update(done)
        project.ensure_priority_view()

    def is_earlier_batch(self, item_version: str | None, version: str) -> bool:
        """Predictions a new batch supersedes: other cold-start batches, on-demand ones (bare model
        version) and UNet ones (their scores belong to the old queue; the next training run redoes them)."""
        if item_version is None or item_version == version:
            return False
        base = self.config.model_version
        return item_version == base or item_version.startswith((base + "-", UNET_VERSION_PREFIX))
