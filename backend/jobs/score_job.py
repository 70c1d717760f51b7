"""The "score" job: score a project's tasks, order them with GSCU, write the queue to Label Studio.

Steps, each safe to repeat after a restart:
1. list the project's tasks and read the segmentation control from its live labelling config;
2. score the tasks: one whose image URL is unchanged since the last run comes from the record
   cache without a download; the others are fetched and scored (in this process, or on the Ray
   cluster at ``SUGFW_RAY_ADDRESS``); any error on one task skips that task, logged with the
   reason, while a network failure fails the job so that the queue retries it;
3. GSCU over every scored task (``backend.jobs.cold_start_ranking``);
4. publish (``backend.jobs.publish``):
   - first time, or after a change of settings (model, K, grid, budget, seed): a new batch, one
     prediction per task (its UNet mask when it has one, else SAM's kept masks, each its own
     region: ``backend.labelstudio.prefill.region_results``) with ``score`` =
     queue position / number of tasks (Label Studio refuses scores outside [0, 1]) and no
     ``cluster`` (Label Studio would serve the least-labelled cluster first, against the
     published order), under a ``model_version`` naming the batch; the project serves it, and
     predictions of earlier batches are deleted;
   - otherwise only the tasks not yet in the published queue get a prediction, under the version
     the project serves, placed by the new GSCU order between their published neighbours
     (``place_new_tasks``); nothing published before is rewritten;
5. a Data Manager tab *SUGFW queue* sorted by prediction score, for "Label Tasks As Displayed".

Label Studio calls ``/setup`` whenever its model settings are read: ``up_to_date`` lets the queue
skip the job when the task count, labelling config and settings are those of the published queue.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import httpx

from backend.config import BackendConfig
from backend.jobs.cold_start_ranking import plan_queue
from backend.jobs.publish import publish_predictions
from backend.jobs.queue import Job, Progress
from backend.jobs.queue_scores import place_new_tasks, queue_score
from backend.jobs.slice_scorer import SliceScorer
from backend.jobs.state import PROJECT_STATE_DIR, ProjectStateStore
from backend.jobs.storage import PredictionStore
from backend.jobs.training_history import UNET_VERSION_PREFIX
from backend.labelstudio.brush import SegmentationControl, parse_label_config
from backend.labelstudio.client import ProjectClient, image_fetcher
from backend.labelstudio.images import ImageFetcher
from backend.labelstudio.prefill import prefill_prediction, region_results
from sugfw.cache import settings_key
from sugfw.data import Slice
from sugfw.errors import SugfwError
from sugfw.records import SliceRecord
from sugfw.scoring import SCORING_VERSION
from sugfw.selection import Selection, get_strategy

log = logging.getLogger(__name__)


TASK_SLICE_PREFIX = "task-"


def task_slice_id(task_id: int) -> str:
    """The slice id of a task's image: what carries the task through scoring, local or remote."""
    return f"{TASK_SLICE_PREFIX}{task_id}"


def slice_task_id(slice_id: str) -> int:
    """The task of a slice id made by :func:`task_slice_id`."""
    return int(slice_id.removeprefix(TASK_SLICE_PREFIX))


class ScoredTask(NamedTuple):
    task_id: int
    record: SliceRecord
    """Without its union mask, regions and uncertainty map: thousands of full-size masks would not
    fit in memory."""


class _LazyResults:
    """Label Studio result items of each task's SAM regions (``region_results``).

    A freshly scored task's masks are encoded at once (the RLE is far smaller than the masks); a
    task reused from an earlier run is encoded from the record cache only if a prediction needs it.
    """

    def __init__(self, scorer: SliceScorer, control: SegmentationControl) -> None:
        self.scorer, self.control = scorer, control
        self.results: dict[int, list[dict[str, Any]]] = {}
        self.hashes: dict[int, str] = {}

    def remember(self, task_id: int, record: SliceRecord) -> None:
        self.hashes[task_id] = record.content_hash
        if record.union_mask is not None:
            self.results[task_id] = region_results(record, self.control)

    def __getitem__(self, task_id: int) -> list[dict[str, Any]]:
        if task_id not in self.results:
            cached = self.scorer.cached(self.hashes[task_id], task_slice_id(task_id))
            found = cached is not None and cached.union_mask is not None
            self.results[task_id] = region_results(cached, self.control) if found else []
        return self.results[task_id]


class Scoring(NamedTuple):
    """What scoring a project's tasks gave, for one run of the job."""

    scored: list[ScoredTask]
    """Every task that could be scored, in task order."""
    skipped: list[int]
    """The tasks that could not be."""
    images: dict[str, list[str]]
    """Task id → [image URL, content hash] of each scored task."""
    results: _LazyResults
    """Each scored task's SAM regions as Label Studio result items."""


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

    def up_to_date(self, project_id: str) -> bool:
        """Whether the published queue still fits the project: same task count, labelling config
        and settings as when it was published (one request). ``/setup`` queues no job then."""
        recorded = self.states.get(project_id).fingerprint
        if not recorded:
            return False
        project = self.connect(int(project_id))
        try:
            return {**project.fingerprint(), "settings": self.settings_key()} == recorded
        finally:
            project.close()

    def settings_key(self) -> str:
        """The configured settings that change a queue (cheap: the model need not be loaded)."""
        settings = [
            self.config.model,
            str(self.config.checkpoint),
            self.config.k,
            self.config.seed,
            self.config.grid,
            self.config.budget,
            self.config.cold_start_strategy,
            SCORING_VERSION,
        ]
        return hashlib.sha256(json.dumps(settings, default=str).encode()).hexdigest()[:16]

    def run(self, job: Job, project: ProjectClient, progress: Progress) -> None:
        fingerprint = {**project.fingerprint(), "settings": self.settings_key()}
        control = parse_label_config(project.label_config())
        tasks = project.tasks()
        progress.update(0, 2 * len(tasks))
        before = self.states.get(job.project)  # as the last run left it
        scored, skipped, images, results = self.score_tasks(tasks, control, progress, before.images)
        if not scored:
            log.warning(
                "project %s: none of its %d task(s) could be scored; queue left unchanged",
                job.project,
                len(tasks),
            )
            return
        records = [item.record for item in scored]
        selection = plan_queue(
            records, self.config.budget, self.config.seed, self.config.cold_start_strategy
        )
        ranks = {item.task_id: int(rank) for item, rank in zip(scored, selection.ranks())}
        ordering = self.ordering_key()
        queue = {t: score for t, (_, score) in before.published.items()}
        served = before.serving
        incremental = before.ordering == ordering and bool(queue) and served is not None
        new_ids = [item.task_id for item in scored if item.task_id not in queue]
        log.info(
            "project %s: %d task(s) scored (%d new), %d skipped; GSCU with %d cluster(s)",
            job.project,
            len(scored),
            len(new_ids),
            len(skipped),
            selection.n_selected,
        )
        if incremental and not new_ids:
            log.info(
                "project %s: queue unchanged since it was published as %s", job.project, served
            )
            # Re-assert what the queue follows, in case someone changed the sampling by hand.
            project.serve_by_prediction_score(served)
            project.ensure_queue_view()
            progress.update(2 * len(tasks))
            self._save(job.project, {"fingerprint": fingerprint}, images)
            return
        if incremental:
            version = served
            placed = place_new_tasks(ranks, queue, new_ids)
            predictions = {t: prefill_prediction(results[t], version, placed[t]) for t in new_ids}
            is_stale = self._never
        else:
            version = self.batch_version(scored, selection)
            n = len(scored)
            predictions = {
                t: prefill_prediction(self.best_result(t, results), version, queue_score(rank, n))
                for t, rank in ranks.items()
            }
            is_stale = lambda item_version: self.is_earlier_batch(item_version, version)  # noqa: E731
        deleted = publish_predictions(
            project,
            self.predictions,
            self.states,
            job.project,
            predictions,
            version,
            is_stale=is_stale,
            after_serving=project.ensure_queue_view,
            task_ids=[task["id"] for task in tasks],
        )
        progress.update(2 * len(tasks))
        if deleted:
            log.info(
                "project %s: deleted %d prediction(s) of earlier batches", job.project, deleted
            )
        state = {"ordering": ordering, "fingerprint": fingerprint}
        if not incremental:
            state.update(model_version=version, served_version=version)
        self._save(job.project, state, images)
        log.info(
            "project %s: queue ready: %d task(s) published as %s (%d new prediction(s))",
            job.project,
            len(queue) + len(new_ids) if incremental else len(predictions),
            version,
            len(predictions),
        )

    def _save(self, project_id: str, changes: dict[str, Any], images: dict[str, list[str]]) -> None:
        """``changes`` and ``images`` into the project's state; the published map, written by
        ``publish_predictions``, stays as it is."""
        self.states.update(project_id, images=images, **changes)

    @staticmethod
    def _never(item_version: str | None) -> bool:
        return False

    def best_result(self, task_id: int, results: _LazyResults) -> list[dict[str, Any]]:
        """Pre-annotation of a task in a new batch: its UNet mask when it has one (never worse
        than what the annotator sees now), else SAM's regions."""
        stored = self.predictions.get(task_id) or {}
        if str(stored.get("model_version", "")).startswith(UNET_VERSION_PREFIX):
            return list(stored.get("result") or [])
        return results[task_id]

    def score_tasks(
        self,
        tasks: list[dict[str, Any]],
        control: SegmentationControl,
        progress: Progress,
        known_images: dict[str, list[str]],
    ) -> Scoring:
        """Score ``tasks``: one whose image URL is unchanged comes from the record cache without a
        download; the others are fetched and scored here, or on the Ray cluster at
        ``SUGFW_RAY_ADDRESS``."""
        records: dict[int, SliceRecord] = {}
        skipped: list[int] = []
        results = _LazyResults(self.scorer, control)
        fresh = []
        # A cache entry from before content was cached lacks it: such slices are read again.
        needs_content = get_strategy(self.config.cold_start_strategy).uses_content
        for task in tasks:
            known = known_images.get(str(task["id"]))
            record = None
            if known is not None and known[0] == task["data"].get(control.image_key):
                record = self.scorer.cached(known[1], task_slice_id(task["id"]))
            if record is None or (needs_content and not math.isfinite(record.content)):
                fresh.append(task)
            else:
                records[task["id"]] = record
        progress.update(len(records))
        fetcher = self.fetcher()
        try:
            for task_id, record in self._score_fresh(fresh, control, fetcher, skipped):
                records[task_id] = record
                progress.update(len(records) + len(skipped))
        finally:
            fetcher.close()
        scored, images = [], {}
        for task in tasks:
            record = records.get(task["id"])
            if record is None:
                continue
            images[str(task["id"])] = [task["data"].get(control.image_key), record.content_hash]
            results.remember(task["id"], record)
            # The regions went into the results: the kept record goes without its masks.
            stripped = dataclasses.replace(
                record, union_mask=None, uncertainty_map=None, region_bits=None
            )
            scored.append(ScoredTask(task["id"], stripped))
        return Scoring(scored, skipped, images, results)

    def _score_fresh(
        self,
        tasks: list[dict[str, Any]],
        control: SegmentationControl,
        fetcher: ImageFetcher,
        skipped: list[int],
    ) -> Iterator[tuple[int, SliceRecord]]:
        """(task id, record) of each task that can be fetched and scored; the others go to
        ``skipped`` with the reason logged."""
        slices = self._fetch(tasks, control, fetcher, skipped)
        if self.config.ray_address:
            from backend.jobs.slice_scorer import SCORE_CACHE_DIR, scorer_spec
            from sugfw.distributed import score_on_ray

            scored = score_on_ray(
                scorer_spec(self.config),
                slices,
                self.config.state_dir / SCORE_CACHE_DIR,
                self.config.ray_address,
                actors=self.config.ray_actors,
                keep_maps=True,
                progress=False,
            )
            for item, record in scored:
                yield slice_task_id(item.slice_id), record
            return
        for item in slices:
            try:
                yield slice_task_id(item.slice_id), self.scorer.score(item.image, item.slice_id)
            except Exception as error:  # a slice the model cannot take costs its task only
                self._skip(slice_task_id(item.slice_id), error, skipped)

    def _fetch(
        self,
        tasks: list[dict[str, Any]],
        control: SegmentationControl,
        fetcher: ImageFetcher,
        skipped: list[int],
    ) -> Iterator[Slice]:
        for task in tasks:
            try:
                image = fetcher.fetch(task, control.image_key)
            except httpx.TransportError:
                raise  # Label Studio or the network is down: the whole job is retried later
            except Exception as error:  # a bad task costs its slice, never the job
                self._skip(task["id"], error, skipped)
                continue
            # The slice id carries the task id through the scoring loop, local or remote.
            yield Slice(task_slice_id(task["id"]), image, "", 0, None, "label-studio")

    @staticmethod
    def _skip(task_id: int, error: Exception, skipped: list[int]) -> None:
        reason = str(error) if isinstance(error, SugfwError) else f"{type(error).__name__}: {error}"
        log.warning("skipping task %s: %s", task_id, reason)
        skipped.append(task_id)

    def ordering_key(self) -> str:
        """Hash of what orders the queue: model, settings, strategy, budget and seed. New tasks
        under the same ordering join the published queue; another ordering publishes a new one."""
        ordering = {
            "scorer": settings_key(self.scorer.identity()),
            "strategy": self.config.cold_start_strategy,
            "budget": self.config.budget,
            "seed": self.config.seed,
        }
        return hashlib.sha256(json.dumps(ordering, sort_keys=True).encode()).hexdigest()[:16]

    def batch_version(self, scored: list[ScoredTask], selection: Selection) -> str:
        """``<model version>-<hash>`` of a full batch: its ordering, tasks and pixels."""
        batch = {
            "ordering": self.ordering_key(),
            "clusters": selection.n_selected,
            "tasks": [[item.task_id, item.record.content_hash] for item in scored],
        }
        digest = hashlib.sha256(json.dumps(batch, sort_keys=True).encode()).hexdigest()
        return f"{self.config.model_version}-{digest[:10]}"

    def is_earlier_batch(self, item_version: str | None, version: str) -> bool:
        """Predictions a new batch supersedes: other cold-start batches, on-demand ones (bare model
        version) and UNet ones (their scores belong to the old queue; the next training run redoes
        them)."""
        if item_version is None or item_version == version:
            return False
        base = self.config.model_version
        return item_version == base or item_version.startswith((base + "-", UNET_VERSION_PREFIX))
