"""The "train" job: retrain the UNet on the submitted annotations, test it, pre-annotate with it.

Steps of one run for a project:
1. pull every annotated task; a task's latest submitted (non-cancelled) annotation becomes a label
   map (label index = 1 + the label's position in the live config's control, 0 = background; an
   annotation without regions is an all-background slice, still a training example);
2. tasks whose data has ``split == "test"`` never reach training: their labelled slices are the
   test set, stacked per ``case_id`` in ``slice_index`` order, spacing from ``data.spacing``
   ((row, col, slice) mm, as ``sugfw import-volumes`` writes it) or 1 mm. When ``SUGFW_TEST_DATA``
   names labelled volumes (MSD/nnU-Net layout or plain folder), every case found there is tested
   *as well*, windowed exactly as ``import-volumes`` windows slices, so it meets the network in
   the form annotators saw (the main job, ``backend.local.launch``, holds a few labelled volumes
   out of the import and points ``SUGFW_TEST_DATA`` at them);
3. validation, by case (``data.case_id``; a task without one is a case of its own), never trained
   on: when any annotated task has ``split == "val"`` (a user can mark tasks so), the cases of
   those tasks are the validation set; otherwise ``SUGFW_VAL_FRACTION`` of the annotated cases
   (at least one), picked by a seeded hash of the case id, so the same cases stay held out as
   annotations grow. With fewer than ``MIN_CASES_FOR_VALIDATION`` annotated cases (or a fraction
   of 0), or when the held-out cases would hold more slices than remain for training (the first
   handful of annotations), nothing is held out, the last weights are kept, and the record says
   why;
4. train with the recipe ``SUGFW_TRAIN_RECIPE`` (default few_slice: whole slices padded to the
   largest, up to ``SUGFW_TRAIN_CROP``; ``sugfw.segmentation.train``) for ``SUGFW_TRAIN_EPOCHS``
   epochs over the training slices (ceil(slices / batch) iterations each), at most
   ``SUGFW_TRAIN_MAX_ITERATIONS`` (the deprecated ``SUGFW_TRAIN_ITERATIONS``, when
   set, fixes the count instead), warm-started from the previous run's kept weights. With
   validation: mean per-case 3-D Dice (``sugfw.segmentation.train.case_dice_validator``: an empty
   prediction of a case with foreground scores 0) every ``SUGFW_VAL_EVERY`` iterations and after
   the last, the best checkpoint kept, and the run stopped once ``SUGFW_EARLY_STOP_PATIENCE``
   validations in a row brought no improvement (never in the first half of the iterations: from
   scratch the network predicts nothing for a while, a flat Dice of 0);
5. per test case DSC and HD95 (``sugfw.metrics.case_metrics``, physical rule, mm) on the
   foreground (every label > 0), mean ± std, appended to the project's history
   (``backend.jobs.training_history``) under ``sugfw-unet-<run>``, with the sizes of the training
   and validation sets (slices and cases), the iterations run, the best validation Dice and
   whether the run stopped early;
6. every task without an annotation gets a prediction of the new version: the UNet's mask and a
   ``score`` from the round strategy ``SUGFW_ROUND_STRATEGY``
   (``backend.jobs.round_ranking``; ``sugfw.active``): by default ``entropy``, the mean predictive
   entropy of the new UNet under ``SUGFW_MC_PASSES`` Monte-Carlo dropout passes, most uncertain
   first (ties to the previous order); ``cold_start`` keeps the scores the tasks had. No
   ``cluster``, so Label Studio serves exactly the score order; the published map
   (``backend.jobs.publish``) keeps the new scores for a later import. Unlabelled test tasks and
   tasks whose image failed keep their previous mask and go after the re-ranked ones, so the
   model under test never pre-draws its own test truth and is never asked to. The project
   then serves the new version (Label Studio orders the stream only by predictions of
   ``project.model_version``), and predictions of earlier UNet runs are deleted.

A run with no annotated training slice is logged and skipped. The job queue runs one job at a time,
so two trainings never overlap; a run interrupted by a restart starts again from the last
finished run's weights. Warm starts carry what earlier runs learnt: a case that moves into the
validation set (a new case hashing before it, or a larger share) was trained on by those runs, so
its first validation scores are optimistic.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from backend.config import BackendConfig
from backend.jobs.evaluation import run_record, summary_line
from backend.jobs.publish import publish_round
from backend.jobs.queue import Job, Progress
from backend.jobs.round_ranking import RoundRanker
from backend.jobs.splits import (
    LabelledSlice,
    TestCase,
    ValidationSplit,
    case_ids_of,
    group_test_cases,
    is_test_task,
    labelled_slice,
    normalise_slice,
    split_validation,
    volume_test_cases,
)
from backend.jobs.state import PROJECT_STATE_DIR, ProjectStateStore
from backend.jobs.storage import PredictionStore
from backend.jobs.training_history import TrainingHistory, unet_version
from backend.labelstudio.annotations import (
    annotation_label_map,
    annotations_fingerprint,
    labels_to_result,
    latest_submitted,
)
from backend.labelstudio.brush import SegmentationControl, parse_label_config
from backend.labelstudio.client import ProjectClient, image_fetcher
from backend.labelstudio.images import ImageFetcher
from sugfw.errors import CheckpointError, SugfwError
from sugfw.segmentation.infer import segment

if TYPE_CHECKING:  # torch is imported only when a run trains
    from sugfw.segmentation.train import TrainResult

log = logging.getLogger(__name__)


class TrainJob:
    """Handler of ``("train", project)`` jobs for :class:`backend.jobs.queue.JobQueue`."""

    def __init__(
        self,
        config: BackendConfig,
        predictions: PredictionStore,
        connect: Callable[[int], ProjectClient] | None = None,
        fetcher: Callable[[], ImageFetcher] | None = None,
        history: TrainingHistory | None = None,
    ) -> None:
        self.config = config
        self.predictions = predictions
        self.connect = connect or (lambda project_id: ProjectClient.connect(config, project_id))
        self.fetcher = fetcher or (lambda: image_fetcher(config))
        self.history = history or TrainingHistory(config.state_dir)
        self.states = ProjectStateStore(config.state_dir / PROJECT_STATE_DIR)

    def __call__(self, job: Job, progress: Progress) -> None:
        project = self.connect(int(job.project))
        try:
            self.run(job.project, project, progress)
        finally:
            project.close()

    def run(
        self, project_id: str, project: ProjectClient, progress: Progress
    ) -> dict[str, Any] | None:
        """One training run; the history record it appended, or None when there was nothing to
        train on."""
        control = parse_label_config(project.label_config())
        annotated = project.annotated_tasks()
        fingerprint = annotations_fingerprint(annotated)
        if fingerprint == self.states.get(project_id).trained_on:
            log.info(
                "project %s: annotations unchanged since the last training run; skipped", project_id
            )
            return None
        tasks = project.tasks()
        annotated_ids = {task["id"] for task in annotated}
        unlabelled = [task for task in tasks if task["id"] not in annotated_ids]
        progress.update(0, len(annotated) + 2 + len(unlabelled))
        fetcher = self.fetcher()
        try:
            recorded = self.history.records(project_id)
            if recorded and recorded[-1].get("fingerprint") == fingerprint:
                # Stopped after recording this run and before its queue was published: publish
                # that run again instead of training a duplicate under a new number.
                record = recorded[-1]
                log.info(
                    "project %s: %s recorded but not published; publishing",
                    project_id,
                    record["model_version"],
                )
                model = self.trained_model(project_id, len(recorded))
            else:
                trained = self.train_and_record(
                    project_id, annotated, control, fetcher, progress, fingerprint
                )
                if trained is None:
                    return None
                record, model = trained
            self.publish(
                project_id,
                project,
                unlabelled,
                control,
                model,
                record["model_version"],
                fetcher,
                progress,
                len(annotated) + 2,
            )
            self.states.update(project_id, trained_on=fingerprint)
            return record
        finally:
            fetcher.close()

    def train_and_record(
        self,
        project_id: str,
        annotated: Sequence[Mapping[str, Any]],
        control: SegmentationControl,
        fetcher: ImageFetcher,
        progress: Progress,
        fingerprint: str,
    ) -> tuple[dict[str, Any], Any] | None:
        """Train a new run on the annotations, test it and append its history record; (record,
        model), or None when there is nothing to train on."""
        train_slices, test_slices = self.collect(annotated, control, fetcher, progress)
        if not train_slices:
            log.info(
                "project %s: no submitted annotation outside the test set; training skipped",
                project_id,
            )
            return None
        split = split_validation(train_slices, self.config.val_fraction, self.config.seed)
        if not split.train:
            log.info(
                "project %s: every annotated case is marked for validation; training skipped",
                project_id,
            )
            return None
        cases = group_test_cases(test_slices) + self.configured_test_cases()
        run = len(self.history.records(project_id)) + 1
        started = time.monotonic()
        model, result = self.train(project_id, run, split, len(control.labels) + 1)
        progress.update(len(annotated) + 1)
        record = run_record(
            unet_version(run),
            split,
            cases,
            model,
            time.monotonic() - started,
            result,
            self.schedule(len(split.train)),
        )
        record["fingerprint"] = fingerprint  # lets a restart before publishing resume there
        self.history.append(project_id, record)
        progress.update(len(annotated) + 2)
        log.info("project %s: %s", project_id, summary_line(record))
        return record, model

    def collect(
        self,
        annotated: Sequence[Mapping[str, Any]],
        control: SegmentationControl,
        fetcher: ImageFetcher,
        progress: Progress,
    ) -> tuple[list[LabelledSlice], list[LabelledSlice]]:
        """(training slices, test slices) from the latest submitted annotation of each task."""
        train, test = [], []
        for done, task in enumerate(annotated, start=1):
            progress.update(done)
            annotation = latest_submitted(task.get("annotations") or [])
            if annotation is None:
                continue  # only cancelled ("skipped") annotations
            data = task.get("data")
            data = data if isinstance(data, Mapping) else {}
            try:
                image = fetcher.fetch(task, control.image_key)
                labels = annotation_label_map(annotation.get("result") or [], control, *image.shape)
            except Exception as error:  # one bad task costs its slice, never the run
                # Annotations are user input: whatever one trips on (a hostile RLE, a ragged
                # polygon, a value of the wrong type) leaves that task out, with the reason.
                reason = str(error) if isinstance(error, SugfwError) else repr(error)[:300]
                log.warning("task %s left out of training and testing: %s", task["id"], reason)
                continue
            item = labelled_slice(task["id"], data, image, labels)
            (test if is_test_task(data) else train).append(item)
        return train, test

    def configured_test_cases(self) -> list[TestCase]:
        if self.config.test_data is None:
            return []
        try:
            return volume_test_cases(self.config.test_data)
        except SugfwError as error:
            log.error(
                "SUGFW_TEST_DATA=%s cannot be used as a test set: %s", self.config.test_data, error
            )
            return []

    def schedule(self, n_train: int) -> int:
        """SGD iterations of a run on ``n_train`` slices: the epoch schedule within its cap, or the
        deprecated fixed ``SUGFW_TRAIN_ITERATIONS``."""
        from sugfw.segmentation.train import iterations_for_epochs

        if self.config.train_iterations is not None:
            return self.config.train_iterations
        epochs = iterations_for_epochs(
            self.config.train_epochs, n_train, self.config.train_batch_size
        )
        return min(epochs, self.config.train_max_iterations)

    def training_window(self, slices: Sequence[LabelledSlice]) -> int:
        """Side of the square training window. few_slice: the largest slice side, so every slice
        is seen whole (padded to the square), capped at ``SUGFW_TRAIN_CROP`` (larger slices are
        cropped at random); paper: random crops of ``SUGFW_TRAIN_CROP``."""
        if self.config.train_recipe != "few_slice":
            return self.config.train_crop
        largest = max(max(item.image.shape) for item in slices)
        return min(largest, self.config.train_crop)

    def train(
        self, project_id: str, run: int, split: ValidationSplit, n_classes: int
    ) -> tuple[Any, TrainResult]:
        """The UNet after this run (best on validation, else the last weights) and its training
        result, trained in ``<project dir>/run-<run>`` from ``run-<run - 1>``'s kept weights."""
        from sugfw.models import resolve_device
        from sugfw.segmentation import train
        from sugfw.segmentation.train import case_dice_validator, recipe_config

        project_dir = self.history.project_dir(project_id)
        run_dir = project_dir / f"run-{run}"
        shutil.rmtree(run_dir, ignore_errors=True)  # a run cut short by a restart starts over
        device = str(resolve_device(self.config.device))
        iterations = self.schedule(len(split.train))
        validated = bool(split.cases)
        patience = self.config.early_stop_patience
        config = recipe_config(
            self.config.train_recipe,
            iterations,
            batch_size=self.config.train_batch_size,
            crop_size=self.training_window(split.train),
            # Without validation, one evaluation after the last iteration: the last weights kept.
            eval_every=min(self.config.val_every, iterations) if validated else iterations,
            seed=self.config.seed + run,
            device=device,
            n_classes=n_classes,
            patience=patience if validated and patience > 0 else None,
            # From scratch the UNet predicts nothing for a while (Dice 0 at every validation):
            # never stop in the first half of the schedule.
            min_iterations=iterations // 2,
        )
        validator = (
            case_dice_validator([(case.images, case.truth) for case in split.cases], config)
            if validated
            else _keep_last
        )
        images, masks = [item.image for item in split.train], [item.labels for item in split.train]
        previous = project_dir / f"run-{run - 1}" / "best.pt"
        init: Path | None = previous if previous.is_file() else None
        try:
            result = train(
                images, masks, validator, config, run_dir, init_state=init, progress=False
            )
        except CheckpointError as error:
            # e.g. labels added to the config: the old head no longer fits
            log.warning(
                "project %s: cannot warm-start from %s (%s); training from scratch",
                project_id,
                init,
                error,
            )
            shutil.rmtree(run_dir, ignore_errors=True)
            result = train(
                images, masks, validator, config, run_dir, init_state=None, progress=False
            )
        if validated:
            kept = (
                f"best validation Dice {result.best_val_dice:.3f} at iteration "
                f"{result.best_iteration} on {len(split.cases)} case(s)"
                f"{' (stopped early)' if result.stopped_early else ''}"
            )
        else:
            kept = split.note or "last weights kept"
        log.info(
            "project %s: run %d trained on %d slice(s) of %d case(s), %d of %d iteration(s); %s%s",
            project_id,
            run,
            len(split.train),
            len(case_ids_of(split.train)),
            result.iterations,
            iterations,
            kept,
            f"; warm-started from {init}" if init is not None else "",
        )
        return self.trained_model(project_id, run), result

    def trained_model(self, project_id: str, run: int) -> Any:
        """The kept weights of run ``run`` of the project, on the configured device."""
        from sugfw.models import resolve_device
        from sugfw.segmentation import load_trained_unet

        run_dir = self.history.project_dir(project_id) / f"run-{run}"
        return load_trained_unet(run_dir / "best.pt", str(resolve_device(self.config.device)))

    def publish(
        self,
        project_id: str,
        project: ProjectClient,
        unlabelled: Sequence[Mapping[str, Any]],
        control: SegmentationControl,
        model: Any,
        version: str,
        fetcher: ImageFetcher,
        progress: Progress,
        done: int,
    ) -> None:
        """Predictions of ``version`` for the unlabelled tasks, re-ranked by the round strategy,
        then the project served by it."""
        config = self.config
        device = str(next(model.parameters()).device)
        ranker = RoundRanker(config.round_strategy, config.mc_passes, config.seed)
        stored_by_task, results = {}, {}
        for step, task in enumerate(unlabelled, start=done + 1):
            stored = stored_by_task[task["id"]] = self.predictions.get(task["id"]) or {}
            results[task["id"]] = list(stored.get("result") or [])
            if not is_test_task(task.get("data") or {}):
                try:
                    image = normalise_slice(fetcher.fetch(task, control.image_key))
                    results[task["id"]] = labels_to_result(
                        segment(model, image[None], device)[0], control
                    )
                    ranker.observe(task["id"], model, image)
                except Exception as error:  # e.g. a bad image, or CUDA out of memory on one
                    # slice: that task keeps its SAM mask and its place in the queue, the rest go on
                    log.warning(
                        "task %s keeps its previous pre-annotation: %s", task["id"], repr(error)
                    )
            progress.update(step)
        if not results:
            return
        # A task outside the queue (never scored) goes last, never first with a null score.
        scores = ranker.scores(
            {task_id: stored.get("score") for task_id, stored in stored_by_task.items()},
            config.round_budget,
        )
        predictions = publish_round(
            project, self.predictions, self.states, project_id, results, scores, version
        )
        log.info(
            "project %s: %d unlabelled task(s) pre-annotated as %s",
            project_id,
            len(predictions),
            version,
        )


def _keep_last(model: Any) -> float:
    """A constant validation score: the one validation, after the last iteration, keeps the last
    weights."""
    return 0.0
