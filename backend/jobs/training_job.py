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

import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from backend.config import BackendConfig
from backend.jobs.publish import publish_round
from backend.jobs.queue import Job, Progress
from backend.jobs.round_ranking import RoundRanker
from backend.jobs.storage import PROJECT_STATE_DIR, PredictionStore, ProjectStateStore
from backend.jobs.training_history import TrainingHistory, unet_version
from backend.labelstudio.brush import (
    SegmentationControl,
    mask_to_result,
    parse_label_config,
    result_to_mask,
)
from backend.labelstudio.client import ProjectClient, image_fetcher
from backend.labelstudio.images import ImageFetcher
from sugfw.errors import CheckpointError, InvalidInputError, SugfwError
from sugfw.metrics import CaseMetrics, case_metrics, summarise
from sugfw.segmentation.preprocess import zscore

if TYPE_CHECKING:  # torch is imported only when a run trains
    from sugfw.segmentation.train import TrainResult

log = logging.getLogger(__name__)

TEST_SPLIT = "test"
VAL_SPLIT = "val"
MIN_CASES_FOR_VALIDATION = 3
"""Fewer annotated cases than this: nothing is held out (two cases would halve the training set)."""
UNIT_SPACING = (1.0, 1.0, 1.0)
_UNET_STRIDE = 16
"""The UNet pools four times: sides must be multiples of 16."""


@dataclass(frozen=True, eq=False)
class LabelledSlice:
    task_id: int
    image: np.ndarray
    """(H, W) float32, z-scored."""
    labels: np.ndarray
    """(H, W) uint8 label map."""
    case_id: str
    slice_index: int
    spacing: tuple[float, float, float]
    """(row, col, slice) mm."""
    split: str | None = None
    """``data.split`` of the task ("val" marks a validation task)."""


@dataclass(frozen=True, eq=False)
class TestCase:
    case_id: str
    images: np.ndarray
    """(Z, H, W) float32, each slice z-scored."""
    truth: np.ndarray
    """(Z, H, W) bool foreground."""
    spacing: tuple[float, float, float]
    """(slice, row, col) mm: the axis order of ``images``."""
    source: str
    """"tasks" or "volumes"."""


def annotations_fingerprint(annotated: Sequence[Mapping[str, Any]]) -> str:
    """Hash of what a training run learns from: each task's latest submitted annotation (id and
    update time). Equal fingerprints mean a run would train on the same data again."""
    items = []
    for task in annotated:
        latest = latest_submitted(task.get("annotations") or [])
        if latest is not None:
            items.append([task["id"], latest.get("id"), str(latest.get("updated_at") or "")])
    return hashlib.sha256(json.dumps(sorted(items, key=str)).encode()).hexdigest()


def latest_submitted(annotations: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The most recently updated annotation that was not cancelled (ties: the higher id)."""
    submitted = [item for item in annotations if not item.get("was_cancelled")]
    if not submitted:
        return None
    return max(
        submitted, key=lambda item: (str(item.get("updated_at") or ""), int(item.get("id") or 0))
    )


def annotation_label_map(
    result: Sequence[Mapping[str, Any]], control: SegmentationControl, height: int, width: int
) -> np.ndarray:
    """(H, W) uint8: 1 + index of each region's label in ``control.labels``, 0 where nothing is
    drawn."""
    if not isinstance(result, list):
        raise InvalidInputError(f"annotation result is {type(result).__name__}; expected a list")
    labels = np.zeros((height, width), dtype=np.uint8)
    for item in result:
        if not isinstance(item, Mapping):
            raise InvalidInputError(f"result item is {type(item).__name__}; expected an object")
        if item.get("from_name") != control.from_name:
            continue  # results of other controls (choices, text) are not part of the mask
        value = item.get("value")
        named = value.get(control.result_type) if isinstance(value, Mapping) else None
        names = named if isinstance(named, list) and named else [control.labels[0]]
        if names[0] not in control.labels:
            raise InvalidInputError(
                f"region label {str(names[0])[:40]!r} is not one of {control.from_name!r}'s "
                f"labels {list(control.labels)}"
            )
        # Sizes are checked against the image before the region is decoded (see result_to_mask).
        drawn = result_to_mask(dict(item), (height, width))
        labels[drawn] = control.labels.index(names[0]) + 1
    return labels


def normalise_slice(image: np.ndarray) -> np.ndarray:
    """The UNet's input: the slice z-scored on its own (PNGs carry no intensity scale)."""
    return zscore(np.asarray(image))


def task_spacing(data: Mapping[str, Any]) -> tuple[float, float, float]:
    """``data.spacing`` as (row, col, slice) mm, or 1 mm when absent or not three positive
    numbers."""
    value = data.get("spacing")
    try:
        spacing = tuple(float(s) for s in value)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        return UNIT_SPACING
    if len(spacing) != 3 or not all(np.isfinite(s) and s > 0 for s in spacing):
        return UNIT_SPACING
    return spacing  # type: ignore[return-value]


def is_test_task(data: Mapping[str, Any]) -> bool:
    return data.get("split") == TEST_SPLIT


def group_test_cases(slices: Sequence[LabelledSlice]) -> list[TestCase]:
    """One case per ``case_id``, slices in ``slice_index`` order; a case mixing slice sizes is
    skipped."""
    by_case: dict[str, list[LabelledSlice]] = {}
    for item in slices:
        by_case.setdefault(item.case_id, []).append(item)
    cases = []
    for case_id, members in sorted(by_case.items()):
        members.sort(key=lambda item: (item.slice_index, item.task_id))
        if len({item.image.shape for item in members}) > 1:
            log.warning(
                "case %s mixes slice sizes %s; left out",
                case_id,
                sorted({m.image.shape for m in members}),
            )
            continue
        row, col, step = members[0].spacing
        cases.append(
            TestCase(
                case_id,
                np.stack([item.image for item in members]),
                np.stack([item.labels > 0 for item in members]),
                (step, row, col),
                "tasks",
            )
        )
    return cases


@dataclass(frozen=True, eq=False)
class ValidationSplit:
    """The annotated non-test slices divided by case into training and validation."""

    train: list[LabelledSlice]
    val: list[LabelledSlice]
    cases: list[TestCase]
    """``val`` stacked per case: what the validator scores."""
    source: str
    """"marked" (tasks with ``split == "val"``), "held_out" (``SUGFW_VAL_FRACTION``) or "none"."""
    note: str | None = None
    """Why there is no validation, when there is none."""

    @property
    def val_case_ids(self) -> list[str]:
        return [case.case_id for case in self.cases]


def case_ids_of(slices: Sequence[LabelledSlice]) -> list[str]:
    return sorted({item.case_id for item in slices})


def split_validation(
    slices: Sequence[LabelledSlice],
    fraction: float,
    seed: int,
    keep_training_majority: bool = True,
) -> ValidationSplit:
    """Hold out validation cases: those of tasks marked ``split == "val"`` when there are any (a
    case with one marked task goes whole, so no case is on both sides), else ``fraction`` of the
    cases (at least one, leaving at least one for training), the first by a seeded hash of their
    id; nothing with fewer than ``MIN_CASES_FOR_VALIDATION`` cases or a fraction of 0, nor (with
    ``keep_training_majority``, the backend's rule) while the held-out cases would hold more
    slices than remain for training."""
    slices = list(slices)
    marked = {item.case_id for item in slices if item.split == VAL_SPLIT}
    if marked:
        chosen, source = marked, "marked"
    else:
        cases = case_ids_of(slices)
        if fraction <= 0:
            return ValidationSplit(
                slices, [], [], "none", "no validation (SUGFW_VAL_FRACTION=0): last weights kept"
            )
        if len(cases) < MIN_CASES_FOR_VALIDATION:
            return ValidationSplit(
                slices,
                [],
                [],
                "none",
                f"no validation: {len(cases)} annotated case(s), {MIN_CASES_FOR_VALIDATION} "
                "needed to hold one out; last weights kept",
            )
        n_val = min(len(cases) - 1, max(1, round(fraction * len(cases))))
        # A hash per case rather than a shuffle of the list: a new case does not reshuffle the rest.
        ranked = sorted(
            cases, key=lambda case: hashlib.sha256(f"{seed}:{case}".encode()).hexdigest()
        )
        chosen, source = set(ranked[:n_val]), "held_out"
    val = [item for item in slices if item.case_id in chosen]
    stacked = group_test_cases(val)
    if not stacked:  # every validation case mixed slice sizes: train on everything instead
        return ValidationSplit(
            slices, [], [], "none", "no validation: no stackable validation case; last weights kept"
        )
    kept = {case.case_id for case in stacked}
    train = [item for item in slices if item.case_id not in chosen]
    val = [item for item in val if item.case_id in kept]
    if keep_training_majority and source == "held_out" and len(train) < len(val):
        # A handful of annotations: a held-out case would take more slices than it leaves to
        # learn from. Train on all of them and keep the last weights of the schedule.
        return ValidationSplit(
            slices,
            [],
            [],
            "none",
            f"no validation: holding out {len(kept)} case(s) would leave {len(train)} training "
            f"slice(s) for {len(val)} validation slice(s); trained on all, last weights kept",
        )
    return ValidationSplit(train, val, stacked, source)


def volume_test_cases(root: Path) -> list[TestCase]:
    """Every labelled case under ``root``, windowed like ``import-volumes`` slices, then z-scored
    per slice."""
    from backend.labelstudio.import_volumes import window_volume
    from sugfw.experiment.dataset import load_msd_dataset

    cases = []
    for case in load_msd_dataset(root):
        pixels = np.moveaxis(window_volume(case.image), -1, 0)
        images = np.stack([normalise_slice(item) for item in pixels])
        row, col, step = case.spacing
        cases.append(
            TestCase(
                case.case_id,
                images,
                np.moveaxis(case.label > 0, -1, 0),
                (step, row, col),
                "volumes",
            )
        )
    return cases


def segment(model: Any, images: np.ndarray, device: str) -> np.ndarray:
    """(Z, H, W) label map of the UNet on (Z, H, W) slices of any size (zero-padded to a multiple
    of 16)."""
    from sugfw.segmentation import predict_volume

    height, width = images.shape[1:]
    pad_h, pad_w = -height % _UNET_STRIDE, -width % _UNET_STRIDE
    # 0 is the mean of a z-scored slice: padding adds no edge for the network to segment.
    padded = np.pad(images, ((0, 0), (0, pad_h), (0, pad_w)))
    return predict_volume(model, padded, device)[:, :height, :width]


def evaluate(model: Any, cases: Sequence[TestCase], device: str) -> list[CaseMetrics]:
    """DSC and HD95 (physical rule, mm) of the foreground of each case, in order."""
    return [
        case_metrics(
            segment(model, case.images, device) > 0, case.truth, case.spacing, rule="physical"
        )
        for case in cases
    ]


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
        if fingerprint == self.states.get(project_id).get("trained_on"):
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
            self.states.put(project_id, {**self.states.get(project_id), "trained_on": fingerprint})
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
        record = self.record(
            unet_version(run), split, cases, model, time.monotonic() - started, result
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
            item = LabelledSlice(
                task["id"],
                normalise_slice(image),
                labels,
                str(data.get("case_id", f"task-{task['id']}")),
                _int(data.get("slice_index"), 0),
                task_spacing(data),
                data.get("split") if isinstance(data.get("split"), str) else None,
            )
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

    def record(
        self,
        version: str,
        split: ValidationSplit,
        cases: Sequence[TestCase],
        model: Any,
        seconds: float,
        result: TrainResult,
    ) -> dict[str, Any]:
        scores = evaluate(model, cases, str(next(model.parameters()).device))
        rows = [
            {
                "case_id": case.case_id,
                "source": case.source,
                "slices": int(case.images.shape[0]),
                "dice": item.dice,
                "hd95": item.hd95,
                "hd95_unit": item.hd95_unit,
            }
            for case, item in zip(cases, scores)
        ]
        summary = summarise(scores) if scores else None
        validated = bool(split.cases)
        return {
            "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "model_version": version,
            # Every annotated slice outside the test set, validation ones included: the x of the
            # learning curve is what annotators have done.
            "annotations": len(split.train) + len(split.val),
            "train_slices": len(split.train),
            "train_cases": len(case_ids_of(split.train)),
            "validation": {
                "source": split.source,
                "slices": len(split.val),
                "cases": len(split.cases),
                "case_ids": split.val_case_ids,
                "best_dice": result.best_val_dice if validated else None,
                "best_iteration": result.best_iteration if validated else None,
                "note": split.note,
            },
            "iterations": result.iterations,
            "iterations_planned": self.schedule(len(split.train)),
            "stopped_early": result.stopped_early,
            "train_seconds": round(seconds, 1),
            "test_set": sorted({case.source for case in cases}) or None,
            "cases": rows,
            "summary": summary,
            "note": None
            if rows
            else 'no test set: mark tasks with data.split = "test" or set SUGFW_TEST_DATA',
        }

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


def labels_to_result(labels: np.ndarray, control: SegmentationControl) -> list[dict[str, Any]]:
    """Result items for every label present in an (H, W) label map (index i → ``control.labels[i
    - 1]``)."""
    items = []
    for index, name in enumerate(control.labels, start=1):
        if (labels == index).any():
            items += mask_to_result(labels == index, control, name)
    return items


def summary_line(record: Mapping[str, Any]) -> str:
    """One log line: version, annotations, and DSC / HD95 mean ± std (or why there is none)."""
    head = f"{record['model_version']} trained on {record['annotations']} annotated slice(s)"
    validation = record.get("validation") or {}
    if validation.get("cases"):
        head += (
            f" ({validation['slices']} of them held out for validation: "
            f"{validation['cases']} case(s), best Dice {validation['best_dice']:.3f})"
        )
    summary = record.get("summary")
    if not summary:
        return f"{head}; {record.get('note')}"
    return (
        f"{head}; test DSC {summary['dice_mean']:.3f} ± {summary['dice_std']:.3f}, "
        f"HD95 {summary['hd95_mean']:.2f} ± {summary['hd95_std']:.2f} {summary['hd95_unit']} "
        f"over {summary['cases']} case(s)"
    )


def _keep_last(model: Any) -> float:
    """A constant validation score: the one validation, after the last iteration, keeps the last
    weights."""
    return 0.0


def _int(value: Any, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default
