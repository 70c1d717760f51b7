"""Labelled volumes for the benchmark: find image/label pairs, load, preprocess, split by case.

Layouts (detected by the presence of ``imagesTr/`` or ``imagesTs/``; a test-only folder with
just ``imagesTs/`` + ``labelsTs/`` is an MSD/nnU-Net folder too, e.g. for ``--test-data``):
- MSD / nnU-Net: read by ``sugfw.msd`` (see there for the pairing rules).
- Plain folder: ``<case>.nii[.gz]`` with its label ``<case><suffix>.nii[.gz]``, where ``<suffix>``
  is one of ``LABEL_SUFFIXES``; every image needs a label and every label an image.

Labels: every value > 0 is foreground (e.g. MSD prostate's PZ + TZ = the whole gland, as in
Promise12); the benchmark is binary, like the paper's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from sugfw.data import load_volume
from sugfw.errors import InvalidInputError
from sugfw.msd import CaseFiles, Subset, file_stem, is_msd_root, msd_pairs, volume_files
from sugfw.segmentation.preprocess import README_UPPER_PERCENTILE, normalise_volume

LABEL_SUFFIXES = ("_segmentation", "_label", "_labels", "_seg", "_mask", "_gt")
"""Plain layout: a label file is its image's stem plus one of these."""
FOREGROUND_MARGIN = 2
"""The authors' "Foreslices": the foreground z-range widened by 2 slices on each side."""


@dataclass(frozen=True, eq=False)  # eq=False: field-wise == on arrays is ambiguous
class Case:
    case_id: str
    image: np.ndarray
    """(H, W, Z) float32 raw intensities, slices on the last axis (as ``load_volume`` gives)."""
    label: np.ndarray
    """(H, W, Z) int32 label map in the image's orientation."""
    spacing: tuple[float, float, float]
    """(row, col, slice) in mm."""
    axis: int
    """Slicing axis in the file's own array order."""
    subset: Subset


@dataclass(frozen=True, eq=False)
class PreparedCase:
    """A case as the benchmark uses it: normalised slices at the working size, truth at full
    size."""

    case_id: str
    images: np.ndarray
    """(Z', h, w) float32: normalised slices of ``slice_indices``, resized bilinearly."""
    labels: np.ndarray
    """(Z', h, w) uint8 foreground at the working size (nearest neighbour), for training."""
    slice_indices: np.ndarray
    """(Z',) indices of the kept slices in the original volume."""
    truth: np.ndarray
    """(H, W, Z') bool foreground at the original resolution, for the 3-D metrics."""
    spacing: tuple[float, float, float]

    @property
    def original_size(self) -> tuple[int, int]:
        return self.truth.shape[0], self.truth.shape[1]


@dataclass(frozen=True)
class CaseSplit:
    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]


def find_case_files(root: Path | str) -> list[CaseFiles]:
    """Image/label pairs under ``root`` (see the module docstring), sorted by case id."""
    root = Path(root)
    if not root.is_dir():
        raise InvalidInputError(f"dataset folder {root} does not exist or is not a folder")
    if is_msd_root(root):
        pairs = msd_pairs(root)
    else:
        pairs = _plain_pairs(root)
    if not pairs:
        raise InvalidInputError(
            f"no image/label pairs in {root}; expected imagesTr/ + labelsTr/ or imagesTs/ + "
            "labelsTs/ (MSD/nnU-Net) or "
            f"<case>.nii.gz with <case>{LABEL_SUFFIXES[0]}.nii.gz (plain folder)"
        )
    ids = [pair.case_id for pair in pairs]
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    if repeated:
        raise InvalidInputError(
            f"{root}: case ids {repeated} occur more than once; expected unique cases"
        )
    return sorted(pairs, key=lambda pair: pair.case_id)


def load_case(files: CaseFiles) -> Case:
    """Read one pair; the label must share the image's grid (shape, slicing axis, spacing)."""
    image, spacing, axis = load_volume(files.image)
    label, label_spacing, label_axis = load_volume(files.label)
    if label.shape != image.shape or label_axis != axis:
        raise InvalidInputError(
            f"label {files.label} (shape {label.shape}, slicing axis {label_axis}) does not match "
            "image "
            f"{files.image} (shape {image.shape}, slicing axis {axis}); expected the same voxel "
            "grid"
        )
    if not np.allclose(label_spacing, spacing, rtol=1e-3):
        raise InvalidInputError(
            f"label {files.label} has spacing {label_spacing}, image {files.image} has {spacing}; "
            "expected the same voxel grid"
        )
    if not np.all(label == np.rint(label)) or label.min() < 0:
        raise InvalidInputError(
            f"label {files.label} holds negative or fractional values; expected class ids >= 0"
        )
    return Case(files.case_id, image, label.astype(np.int32), spacing, axis, files.subset)


def load_msd_dataset(root: Path | str) -> list[Case]:
    """Every labelled case under ``root`` (MSD/nnU-Net layout or a plain folder), loaded."""
    return [load_case(files) for files in find_case_files(root)]


def foreground_slices(label: np.ndarray, margin: int = FOREGROUND_MARGIN) -> np.ndarray:
    """Indices of the slices (last axis) from the first to the last foreground slice, widened by
    ``margin`` on each side and clipped to the volume; empty without foreground. Slices inside the
    range are kept even when they hold no foreground (it is a z-range)."""
    if label.ndim != 3:
        raise InvalidInputError(f"expected an (H, W, Z) label volume, got shape {label.shape}")
    if margin < 0:
        raise InvalidInputError(f"margin must be >= 0, got {margin}")
    present = np.flatnonzero((label > 0).any(axis=(0, 1)))
    if present.size == 0:
        return np.empty(0, dtype=np.int64)
    start = max(0, int(present[0]) - margin)
    stop = min(label.shape[2], int(present[-1]) + margin + 1)
    return np.arange(start, stop, dtype=np.int64)


def resize_slices(
    stack: np.ndarray, size: tuple[int, int], mode: Literal["bilinear", "nearest"]
) -> np.ndarray:
    """Resize a (Z, H, W) stack in-plane: bilinear (antialiased when shrinking) for images, exact
    nearest neighbour for label maps."""
    if stack.shape[1:] == tuple(size):
        return stack
    tensor = torch.from_numpy(np.ascontiguousarray(stack, dtype=np.float32))[:, None]
    if mode == "bilinear":
        shrinking = size[0] < stack.shape[1] or size[1] < stack.shape[2]
        resized = F.interpolate(
            tensor, size=size, mode="bilinear", align_corners=False, antialias=shrinking
        )
    else:
        resized = F.interpolate(tensor, size=size, mode="nearest-exact")
    return resized[:, 0].numpy().astype(stack.dtype, copy=False)


def prepare_case(
    case: Case,
    working_size: int | None = None,
    foreground_margin: int | None = FOREGROUND_MARGIN,
    upper_percentile: float = README_UPPER_PERCENTILE,
) -> PreparedCase:
    """Normalise the whole volume (percentile clip + z-score), keep the foreground slices ±
    ``foreground_margin`` (all slices when None) and resize them to ``working_size``² (no resize
    when None). Non-square slices are stretched to the square; predictions are mapped back with
    bilinear interpolation of the class scores followed by argmax."""
    if working_size is not None and working_size < 16:
        raise InvalidInputError(f"working_size must be >= 16 pixels, got {working_size}")
    normalised = normalise_volume(case.image, upper_percentile)
    if foreground_margin is None:
        indices = np.arange(case.image.shape[2], dtype=np.int64)
    else:
        indices = foreground_slices(case.label, foreground_margin)
    foreground = case.label[..., indices] > 0
    images = np.moveaxis(normalised[..., indices], -1, 0)
    labels = np.moveaxis(foreground, -1, 0).astype(np.uint8)
    if working_size is not None:
        images = resize_slices(images, (working_size, working_size), "bilinear")
        labels = resize_slices(labels, (working_size, working_size), "nearest")
    return PreparedCase(
        case.case_id,
        np.ascontiguousarray(images),
        np.ascontiguousarray(labels),
        indices,
        foreground,
        case.spacing,
    )


def split_cases(case_ids: list[str], n_val: int, n_test: int, seed: int) -> CaseSplit:
    """Split by case, never by slice: a seeded permutation of the sorted ids gives the first
    ``n_test`` to test, the next ``n_val`` to validation and the rest (at least one) to training."""
    ids = sorted(case_ids)
    if len(set(ids)) != len(ids):
        raise InvalidInputError(f"case ids repeat: {sorted({i for i in ids if ids.count(i) > 1})}")
    if n_val < 0 or n_test < 0:
        raise InvalidInputError(f"n_val and n_test must be >= 0, got {n_val} and {n_test}")
    if n_val + n_test >= len(ids):
        raise InvalidInputError(
            f"{n_val} validation + {n_test} test cases leave no training case among {len(ids)}; "
            "expected n_val + n_test < number of cases"
        )
    order = [ids[i] for i in np.random.default_rng(seed).permutation(len(ids))]
    test, val, train = order[:n_test], order[n_test : n_test + n_val], order[n_test + n_val :]
    return CaseSplit(tuple(sorted(train)), tuple(sorted(val)), tuple(sorted(test)))


def _plain_pairs(root: Path) -> list[CaseFiles]:
    volumes = {file_stem(path): path for path in volume_files(root)}
    labels = {}
    for stem, path in volumes.items():
        suffix = next((s for s in LABEL_SUFFIXES if stem.endswith(s) and len(stem) > len(s)), None)
        if suffix is not None:
            labels[stem[: -len(suffix)]] = path
    label_paths = set(labels.values())
    images = {stem: path for stem, path in volumes.items() if path not in label_paths}
    missing_image = sorted(str(labels[c]) for c in labels if c not in images)
    missing_label = sorted(str(images[c]) for c in images if c not in labels)
    if missing_image:
        raise InvalidInputError(
            f"label file(s) without an image in {root}: {', '.join(missing_image)}"
        )
    if missing_label:
        raise InvalidInputError(
            f"image(s) without a label in {root}: {', '.join(missing_label)}; expected <case>"
            f"<suffix>.nii.gz beside each, with <suffix> one of {', '.join(LABEL_SUFFIXES)}"
        )
    return [CaseFiles(case_id, images[case_id], labels[case_id], "train") for case_id in images]
