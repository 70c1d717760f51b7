"""Per-case segmentation metrics on 3-D masks: Dice and HD95, with explicit empty-mask rules.

Masks are binary arrays of one 3-D shape in any axis order; ``spacing`` gives the voxel size in mm
along the same axes. Surfaces are ``mask XOR erosion(mask)`` with face (6-) connectivity, as in
medpy (``connectivity=1``) and MONAI (scipy's default structure); a distance is the Euclidean
distance in mm from a surface voxel of one mask to the nearest surface voxel of the other.

HD95 definitions (they differ when the two directed distance sets differ in size or spread):
- ``"pooled"``: 95th percentile of both directed distance sets concatenated (medpy's ``hd95``).
- ``"max_directed"``: the larger of the two directed 95th percentiles (MONAI's
  ``compute_hausdorff_distance(percentile=95)``).
Percentiles use linear interpolation (numpy's default, and torch.quantile's in MONAI).

Empty-mask rules of :func:`case_metrics`:
- ``"physical"`` (default), HD95 in mm: both masks empty -> Dice 1, HD95 0 (a correct "nothing
  here"); exactly one empty -> Dice 0, HD95 = the diagonal of the volume's field of view,
  sqrt(sum((shape_i * spacing_i)^2)). A finite worst case keeps mean ± std usable (an infinite or
  NaN HD95 would poison both), and it is strictly larger than any distance between two voxels of
  the volume, so a missed or spurious object always scores worse than any real prediction.
- ``"paper"``: the SUGFW authors' evaluation, for comparison with their Table 1. HD95 is medpy's
  pooled HD95 without spacing, i.e. in voxel units. Their code scores a case with medpy only when
  the prediction is non-empty and returns (Dice 0, HD95 0) otherwise; with a non-empty prediction
  and an empty truth medpy's HD95 raises, so that case is defined here as (0, 0) too. Hence every
  case with an empty mask, including both empty, is (0, 0). Note that HD95 0 for an empty
  prediction rewards predicting nothing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.ndimage import binary_erosion, distance_transform_edt, generate_binary_structure

from sugfw.errors import InvalidInputError

HD95Definition = Literal["pooled", "max_directed"]
EmptyRule = Literal["physical", "paper"]

_FACE_NEIGHBOURS = generate_binary_structure(3, 1)
_PAPER_SPACING = (1.0, 1.0, 1.0)


@dataclass(frozen=True)
class CaseMetrics:
    """Dice and HD95 of one case; ``hd95_unit`` is ``"mm"`` (physical) or ``"voxel"`` (paper)."""

    dice: float
    hd95: float
    hd95_unit: Literal["mm", "voxel"]
    rule: EmptyRule
    pred_empty: bool
    truth_empty: bool


def dice(pred: np.ndarray, truth: np.ndarray, empty_value: float = 1.0) -> float:
    """Dice = 2|P ∩ T| / (|P| + |T|) of two validated 3-D masks; ``empty_value`` when both are
    empty."""
    pred, truth = _validated_pair(pred, truth)
    return mask_dice(pred, truth, empty_value)


def mask_dice(a: np.ndarray, b: np.ndarray, empty_value: float = 1.0) -> float:
    """Dice of two boolean masks of one shape, any number of axes (slices as well as volumes);
    ``empty_value`` when both are empty. The one Dice formula: :func:`dice` validates, then
    calls it."""
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    total = int(np.count_nonzero(a)) + int(np.count_nonzero(b))
    if total == 0:
        return float(empty_value)
    return 2.0 * int(np.count_nonzero(a & b)) / total


def foreground_dice(prediction: np.ndarray, target: np.ndarray, n_classes: int) -> float:
    """Mean over classes 1..C−1 of the label maps' Dice, counting a class absent from both as 1."""
    return float(
        np.mean([mask_dice(prediction == label, target == label) for label in range(1, n_classes)])
    )


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two masks of one shape; two empty masks agree (1.0)."""
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def hd95(
    pred: np.ndarray,
    truth: np.ndarray,
    spacing: Sequence[float],
    definition: HD95Definition = "pooled",
) -> float:
    """95th-percentile Hausdorff distance in the units of ``spacing``; needs two non-empty masks."""
    pred, truth = _validated_pair(pred, truth)
    sampling = _validated_spacing(spacing)
    _check_definition(definition)
    for name, mask in (("prediction", pred), ("truth", truth)):
        if not mask.any():
            raise InvalidInputError(
                f"HD95 is undefined for an empty {name} mask; "
                "use case_metrics to apply an empty-mask rule"
            )
    pred_to_truth, truth_to_pred = _directed_surface_distances(pred, truth, sampling)
    if definition == "pooled":
        return float(np.percentile(np.concatenate([pred_to_truth, truth_to_pred]), 95))
    return float(max(np.percentile(pred_to_truth, 95), np.percentile(truth_to_pred, 95)))


def case_metrics(
    pred: np.ndarray,
    truth: np.ndarray,
    spacing: Sequence[float],
    rule: EmptyRule = "physical",
    definition: HD95Definition = "pooled",
) -> CaseMetrics:
    """Dice and HD95 of one case under an empty-mask rule (see the module docstring)."""
    pred, truth = _validated_pair(pred, truth)
    sampling = _validated_spacing(spacing)
    _check_definition(definition)
    pred_empty, truth_empty = not pred.any(), not truth.any()
    both_present = not (pred_empty or truth_empty)

    if rule == "physical":
        if both_present:
            scores = (dice(pred, truth), hd95(pred, truth, sampling, definition))
        elif pred_empty and truth_empty:
            scores = (1.0, 0.0)
        else:
            scores = (0.0, field_of_view_diagonal(pred.shape, sampling))
        unit: Literal["mm", "voxel"] = "mm"
    elif rule == "paper":
        if definition != "pooled":
            raise InvalidInputError(
                f"the 'paper' rule uses medpy's pooled HD95; got definition {definition!r}"
            )
        if both_present:
            scores = (dice(pred, truth), hd95(pred, truth, _PAPER_SPACING, "pooled"))
        else:
            scores = (0.0, 0.0)
        unit = "voxel"
    else:
        raise InvalidInputError(f"unknown empty-mask rule {rule!r}; expected 'physical' or 'paper'")

    return CaseMetrics(
        dice=float(scores[0]),
        hd95=float(scores[1]),
        hd95_unit=unit,
        rule=rule,
        pred_empty=pred_empty,
        truth_empty=truth_empty,
    )


def summarise(values: Sequence[CaseMetrics]) -> dict[str, float | int | str]:
    """Mean and population std (ddof=0, numpy's default, as the authors report) of Dice and HD95."""
    cases = list(values)
    if not cases:
        raise InvalidInputError("cannot summarise an empty list of case metrics")
    units = {case.hd95_unit for case in cases}
    if len(units) > 1:
        raise InvalidInputError(f"cannot summarise HD95 values in mixed units {sorted(units)}")
    dices = np.array([case.dice for case in cases], dtype=np.float64)
    distances = np.array([case.hd95 for case in cases], dtype=np.float64)
    return {
        "cases": len(cases),
        "dice_mean": float(dices.mean()),
        "dice_std": float(dices.std()),
        "hd95_mean": float(distances.mean()),
        "hd95_std": float(distances.std()),
        "hd95_unit": units.pop(),
    }


def field_of_view_diagonal(shape: Sequence[int], spacing: Sequence[float]) -> float:
    """Diagonal of the volume's physical extent, sqrt(sum((n_i · s_i)^2)), in spacing units."""
    return float(math.hypot(*(n * s for n, s in zip(shape, spacing))))


def _directed_surface_distances(
    pred: np.ndarray, truth: np.ndarray, spacing: tuple[float, ...]
) -> tuple[np.ndarray, np.ndarray]:
    # Cropping to the union's bounding box is exact: every surface voxel and every nearest partner
    # lies inside it, and voxels outside it are background, as the erosion's zero border assumes.
    box = _bounding_box(pred | truth)
    pred_surface = _surface(pred[box])
    truth_surface = _surface(truth[box])
    pred_to_truth = distance_transform_edt(~truth_surface, sampling=spacing)[pred_surface]
    truth_to_pred = distance_transform_edt(~pred_surface, sampling=spacing)[truth_surface]
    return pred_to_truth, truth_to_pred


def _surface(mask: np.ndarray) -> np.ndarray:
    return mask ^ binary_erosion(mask, structure=_FACE_NEIGHBOURS)


def _bounding_box(mask: np.ndarray) -> tuple[slice, ...]:
    box = []
    for axis in range(mask.ndim):
        other_axes = tuple(a for a in range(mask.ndim) if a != axis)
        present = np.flatnonzero(mask.any(axis=other_axes))
        box.append(slice(int(present[0]), int(present[-1]) + 1))
    return tuple(box)


def _validated_pair(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred_mask = _as_mask(pred, "prediction")
    truth_mask = _as_mask(truth, "truth")
    if pred_mask.shape != truth_mask.shape:
        raise InvalidInputError(
            f"prediction shape {pred_mask.shape} differs from truth shape {truth_mask.shape}; "
            "expected masks of the same 3-D shape"
        )
    return pred_mask, truth_mask


def _as_mask(array: np.ndarray, name: str) -> np.ndarray:
    mask = np.asarray(array)
    if mask.ndim != 3:
        raise InvalidInputError(f"{name} mask has shape {mask.shape}; expected a 3-D array")
    if mask.size == 0:
        raise InvalidInputError(f"{name} mask has shape {mask.shape}; expected no zero-length axis")
    if mask.dtype == np.bool_:
        return mask
    # Non-boolean input must already be 0/1: a multi-label map would otherwise merge silently.
    values = np.unique(mask)
    if not np.isin(values, (0, 1)).all():
        shown = values[:5].tolist()
        more = ", ..." if values.size > 5 else ""
        raise InvalidInputError(
            f"{name} mask holds values {shown}{more}; expected a boolean or 0/1 mask"
        )
    return mask.astype(bool)


def _check_definition(definition: str) -> None:
    if definition not in ("pooled", "max_directed"):
        raise InvalidInputError(
            f"unknown HD95 definition {definition!r}; expected 'pooled' or 'max_directed'"
        )


def _validated_spacing(spacing: Sequence[float]) -> tuple[float, ...]:
    try:
        values = tuple(float(s) for s in spacing)
    except (TypeError, ValueError) as error:
        raise InvalidInputError(f"spacing {spacing!r} is not a sequence of numbers") from error
    if len(values) != 3:
        raise InvalidInputError(
            f"spacing {spacing!r} has {len(values)} values; expected 3 (one per axis)"
        )
    if not all(math.isfinite(s) and s > 0 for s in values):
        raise InvalidInputError(f"spacing {spacing!r} must be finite and positive along every axis")
    return values
