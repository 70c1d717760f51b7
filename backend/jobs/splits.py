"""The case-wise data of a training run: training, validation and test slices, by case.

Tasks whose data has ``split == "test"`` are the test set, stacked per ``case_id`` in
``slice_index`` order; validation is held out by case (``data.case_id``; a task without one is a
case of its own), from tasks marked ``split == "val"`` or a seeded hash of the case ids, so that
no case is on both sides and the same cases stay held out as annotations grow.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sugfw.segmentation.preprocess import zscore

log = logging.getLogger(__name__)

TEST_SPLIT = "test"
VAL_SPLIT = "val"
MIN_CASES_FOR_VALIDATION = 3
"""Fewer annotated cases than this: nothing is held out (two cases would halve the training set)."""
UNIT_SPACING = (1.0, 1.0, 1.0)


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


def _int(value: Any, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def labelled_slice(
    task_id: int, data: Mapping[str, Any], image: np.ndarray, labels: np.ndarray
) -> LabelledSlice:
    """A task's slice and label map, placed by its data (``case_id``, ``slice_index``,
    ``spacing``, ``split``)."""
    split = data.get("split")
    return LabelledSlice(
        task_id,
        normalise_slice(image),
        labels,
        str(data.get("case_id", f"task-{task_id}")),
        _int(data.get("slice_index"), 0),
        task_spacing(data),
        split if isinstance(split, str) else None,
    )
