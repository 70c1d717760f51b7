"""``sugfw import-volumes``: NIfTI volumes → 8-bit PNG slices → Label Studio tasks.

Each volume is windowed on its own intensity percentiles (0.5 and 99.5 by default, computed over
all of its voxels, so every slice of a case shares one window and a few hot voxels do not wash
the rest out): values at or below the low percentile become 0, at or above the high one 255,
linearly in between. A constant volume becomes all 0.

Every slice is written to a temporary folder first, so an unreadable volume stops the import
before anything reaches the server. Upload then goes in batches, two requests each:

1. the PNGs as one multipart request with ``commit_to_project=false`` (one distinct form-field
   name per file: files sharing a name collapse into one), which stores them without tasks;
2. one JSON import creating the batch's tasks with their full data (``image``, ``case_id``,
   ``slice_index``, ``spacing``, optional ``split``) whose ``image`` is the stored file's URL.

So a task never exists without its metadata, and a batch that fails leaves no half-described
tasks behind; the slices that did not make it are reported and the import fails.
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from label_studio_sdk.core.api_error import ApiError
from PIL import Image

from sugfw.data import MIN_SIDE, VOLUME_SUFFIXES, load_volume
from sugfw.errors import InvalidInputError, SugfwError
from sugfw.intensity import window_to_uint8
from sugfw.msd import (
    case_id_of,
    is_first_channel,
    training_images,
    volume_files,
    volume_stem,
)

log = logging.getLogger(__name__)

WINDOW_PERCENTILES = (0.5, 99.5)
DEFAULT_BATCH_SIZE = 50
SPLITS = ("train", "test")
MEDIA_URL = "/data/"
"""Where Label Studio serves stored uploads (its ``MEDIA_URL``):
``/data/upload/<project>/<name>``."""

# The server rewrites other characters in stored file names; the task's case_id keeps the original.
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


class ImportFailedError(SugfwError):
    """Some slices could not be uploaded; the message lists them."""


@dataclass(frozen=True)
class SlicePng:
    """One windowed slice written to disk, with the metadata its task will carry."""

    path: Path
    case_id: str
    slice_index: int
    spacing: tuple[float, float, float]
    """(row, col, slice) in mm."""
    split: str | None = None

    def task_data(self, image_url: str) -> dict[str, Any]:
        data: dict[str, Any] = {
            "image": image_url,
            "case_id": self.case_id,
            "slice_index": self.slice_index,
            "spacing": list(self.spacing),
        }
        if self.split is not None:
            data["split"] = self.split
        return data


# -- volumes → PNG slices
# ---------------------------------------------------------------------------


def find_volumes(inputs: Sequence[Path | str]) -> list[Path]:
    """NIfTI files named by ``inputs``: files as given; a folder's own volumes, or those of its
    ``imagesTr/`` when it has one (MSD / nnU-Net layout, other channels than ``_0000`` skipped)."""
    volumes: list[Path] = []
    for item in map(Path, inputs):
        if item.is_file():
            if volume_stem(item) is None:
                raise InvalidInputError(
                    f"{item}: not a NIfTI volume; expected a name ending in "
                    f"{' or '.join(VOLUME_SUFFIXES)}"
                )
            volumes.append(item)
        elif item.is_dir():
            folder = training_images(item)
            found = [path for path in volume_files(folder) if is_first_channel(path)]
            if not found:
                raise InvalidInputError(
                    f"no NIfTI volumes ({', '.join(VOLUME_SUFFIXES)}) in {folder}"
                )
            volumes.extend(found)
        else:
            raise InvalidInputError(
                f"{item} does not exist; expected a NIfTI file or a folder of them"
            )
    cases: dict[str, Path] = {}
    for path in volumes:
        case = case_id_of(path)
        if case in cases:
            raise InvalidInputError(
                f"case id {case!r} of {path} repeats that of {cases[case]}; expected one volume "
                "per case"
            )
        cases[case] = path
    return volumes


def window_volume(volume: np.ndarray) -> np.ndarray:
    """``volume`` as 0..255 through the window [P_low, P_high] of its own voxels."""
    return window_to_uint8(volume, WINDOW_PERCENTILES)


def reslice(
    volume: np.ndarray, spacing: tuple[float, float, float], found_axis: int, axis: int
) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Re-cut a ``load_volume`` result (slices last, cut along file axis ``found_axis``) along
    file axis ``axis``."""
    if axis not in (0, 1, 2):
        raise InvalidInputError(f"--axis {axis}: expected 0, 1 or 2 (an axis of the file's array)")
    if axis == found_axis:
        return volume, spacing
    in_file_order = np.moveaxis(volume, -1, found_axis)
    kept = [a for a in range(3) if a != found_axis] + [found_axis]
    file_spacing = [0.0] * 3
    for position, file_axis in enumerate(kept):
        file_spacing[file_axis] = spacing[position]
    order = [a for a in range(3) if a != axis] + [axis]
    resliced = np.moveaxis(in_file_order, axis, -1)
    return resliced, (file_spacing[order[0]], file_spacing[order[1]], file_spacing[order[2]])


def volume_slices(
    path: Path, *, slice_step: int = 1, axis: int | None = None
) -> Iterator[tuple[int, np.ndarray, tuple[float, float, float]]]:
    """(slice index, 8-bit slice, spacing) for every ``slice_step``-th slice of one volume."""
    volume, spacing, found_axis = load_volume(path)
    if axis is not None:
        volume, spacing = reslice(volume, spacing, found_axis, axis)
    if min(volume.shape[:2]) < MIN_SIDE:
        raise InvalidInputError(
            f"{path}: slices of {volume.shape[0]} x {volume.shape[1]} pixels along axis "
            f"{found_axis if axis is None else axis}; expected at least {MIN_SIDE} on each side"
        )
    pixels = window_volume(volume)
    for index in range(0, pixels.shape[-1], slice_step):
        yield index, pixels[..., index], spacing


def read_case_list(path: Path | str) -> set[str]:
    """Case ids, one a line; blank lines and ``#`` comments are ignored."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise InvalidInputError(f"cannot read case list {path}: {error}") from error
    return {line.split("#", 1)[0].strip() for line in lines} - {""}


def assign_splits(
    case_ids: Sequence[str], split: str | None = None, test_cases: set[str] | None = None
) -> dict[str, str | None]:
    """Split of each case: ``split`` for all, or "test" for ``test_cases`` and "train" for the
    rest, or none."""
    if split is not None and test_cases is not None:
        raise InvalidInputError(
            "give either a split for every case or a list of test cases, not both"
        )
    if split is not None and split not in SPLITS:
        raise InvalidInputError(f"split {split!r}: expected one of {', '.join(SPLITS)}")
    if test_cases is None:
        return {case: split for case in case_ids}
    # A misspelt id would silently put a test case into training: refuse it.
    unknown = sorted(test_cases - set(case_ids))
    if unknown:
        raise InvalidInputError(
            f"test case ids {unknown} match no volume; the volumes' case ids are {sorted(case_ids)}"
        )
    return {case: "test" if case in test_cases else "train" for case in case_ids}


def write_slices(
    volumes: Sequence[Path],
    out_dir: Path,
    *,
    slice_step: int = 1,
    limit: int | None = None,
    axis: int | None = None,
    splits: Mapping[str, str | None] | None = None,
) -> list[SlicePng]:
    """Write ``<case>_z<index:03d>.png`` for every ``slice_step``-th slice, at most ``limit`` in
    all."""
    if slice_step < 1:
        raise InvalidInputError(f"--slice-step {slice_step}: expected at least 1")
    if limit is not None and limit < 1:
        raise InvalidInputError(f"--limit {limit}: expected at least 1 slice")
    splits = splits or {}
    stems: dict[str, str] = {}
    for path in volumes:
        case = case_id_of(path)
        stem = stems.setdefault(_UNSAFE.sub("_", case), case)
        if stem != case:
            raise InvalidInputError(
                f"case ids {stem!r} and {case!r} ({path}) give the same PNG names; rename one "
                "volume"
            )

    def all_slices() -> Iterator[SlicePng]:
        for path in volumes:
            case = case_id_of(path)
            for index, pixels, spacing in volume_slices(path, slice_step=slice_step, axis=axis):
                target = out_dir / f"{_UNSAFE.sub('_', case)}_z{index:03d}.png"
                Image.fromarray(np.ascontiguousarray(pixels), mode="L").save(target)
                yield SlicePng(
                    target, case, index, tuple(float(s) for s in spacing), splits.get(case)
                )

    return list(islice(all_slices(), limit))


# -- upload
# -----------------------------------------------------------------------------------------


@dataclass
class ImportReport:
    task_ids: dict[str, int] = field(default_factory=dict)
    """PNG file name → id of the task created for it."""
    failed: list[SlicePng] = field(default_factory=list)
    error: str | None = None

    def failure_message(self) -> str:
        by_case: dict[str, list[int]] = {}
        for item in self.failed:
            by_case.setdefault(item.case_id, []).append(item.slice_index)
        missing = "; ".join(
            f"{case}: slices {', '.join(map(str, indices))}" for case, indices in by_case.items()
        )
        return (
            f"{len(self.failed)} slice(s) were not imported ({self.error}); {len(self.task_ids)} "
            "were. "
            f"Not imported: {missing}"
        )


class ProjectUploader:
    """Upload slices into one Label Studio project (``connection.sdk`` for the API calls the
    SDK has, ``connection.request`` for the multipart upload it has not)."""

    def __init__(
        self, connection: Any, project_id: int, batch_size: int = DEFAULT_BATCH_SIZE
    ) -> None:
        if batch_size < 1:
            raise InvalidInputError(f"--batch-size {batch_size}: expected at least 1")
        self.connection = connection
        self.client = connection.sdk
        self.project_id = project_id
        self.batch_size = batch_size

    def check_project(self) -> str:
        """The project's title; fails fast on a wrong URL, key or project id (before slicing)."""
        try:
            return self.client.projects.get(id=self.project_id).title or ""
        except ApiError as error:
            raise InvalidInputError(
                f"Label Studio project {self.project_id}: HTTP {error.status_code} "
                f"{_short(error.body)}"
            ) from None
        except httpx.HTTPError as error:  # refused, DNS, timeout
            raise InvalidInputError(
                f"cannot reach Label Studio: {type(error).__name__}: {error}"
            ) from None

    def upload(self, slices: Sequence[SlicePng]) -> ImportReport:
        """Upload in batches; stop at the first failed batch and report it and the rest as not
        imported."""
        report = ImportReport()
        for start in range(0, len(slices), self.batch_size):
            batch = slices[start : start + self.batch_size]
            try:
                task_ids = self._upload_batch(batch)
            except _BATCH_ERRORS as error:  # any of them ends the import, reported below
                report.error = _describe(error)
                report.failed = list(slices[start:])
                log.error(
                    "batch of %d slice(s) from %s failed: %s",
                    len(batch),
                    batch[0].path.name,
                    report.error,
                )
                return report
            report.task_ids.update(zip((item.path.name for item in batch), task_ids))
            log.info("imported %d / %d slices", len(report.task_ids), len(slices))
        return report

    def _upload_batch(self, batch: Sequence[SlicePng]) -> list[int]:
        upload_ids = self._store_files(batch)
        try:
            return self._create_tasks(batch, upload_ids)
        except _BATCH_ERRORS:
            self._forget_files(upload_ids)
            raise

    def _forget_files(self, upload_ids: Sequence[int]) -> None:
        # Stored files without tasks only take disk space; a failed clean-up is not worth masking
        # the real error.
        for upload_id in upload_ids:
            try:
                self.client.files.delete(id=upload_id)
            except _BATCH_ERRORS as error:
                log.warning("could not delete uploaded file %d: %s", upload_id, _describe(error))

    def _create_tasks(self, batch: Sequence[SlicePng], upload_ids: Sequence[int]) -> list[int]:
        stored = {
            item.id: item.file
            for item in self.client.files.list(id=self.project_id, ids=json.dumps(upload_ids))
        }
        tasks = []
        for item, upload_id in zip(batch, upload_ids):
            name = stored.get(upload_id)
            if name is None or not name.endswith(item.path.name):
                raise ImportFailedError(
                    f"upload {upload_id} of {item.path.name} is stored as {name!r}"
                )
            tasks.append({"data": item.task_data(MEDIA_URL + name.lstrip("/"))})
        response = self.client.projects.import_tasks(
            id=self.project_id, request=tasks, return_task_ids=True
        )
        task_ids = list(getattr(response, "task_ids", None) or [])
        if len(task_ids) != len(batch):
            raise ImportFailedError(
                f"server created {len(task_ids)} task(s) for {len(batch)} slices"
            )
        return task_ids

    def _store_files(self, batch: Sequence[SlicePng]) -> list[int]:
        # The SDK has no multipart import method.
        files = {
            f"file{i}": (item.path.name, item.path.read_bytes(), "image/png")
            for i, item in enumerate(batch)
        }
        response = self.connection.request(
            "POST",
            f"api/projects/{self.project_id}/import",
            params={"commit_to_project": "false"},
            files=files,
            timeout=300,
        )
        if response.status_code >= 300:
            raise ImportFailedError(
                f"file upload answered HTTP {response.status_code}: {_short(response.text)}"
            )
        upload_ids = response.json().get("file_upload_ids") or []
        if len(upload_ids) != len(batch):
            raise ImportFailedError(
                f"server stored {len(upload_ids)} file(s) for {len(batch)} slices"
            )
        return upload_ids


# HTTP statuses (SDK), transport, our own checks, an unreadable PNG, a non-JSON answer.
_BATCH_ERRORS = (ApiError, httpx.HTTPError, ImportFailedError, OSError, ValueError)


def _describe(error: Exception) -> str:
    if isinstance(error, ApiError):
        return f"HTTP {error.status_code}: {_short(error.body)}"
    return f"{type(error).__name__}: {_short(str(error))}"


def _short(value: Any, limit: int = 300) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[:limit] + "..."


def import_volumes(
    inputs: Sequence[Path | str],
    project_id: int,
    connection: Any,
    *,
    slice_step: int = 1,
    limit: int | None = None,
    axis: int | None = None,
    split: str | None = None,
    test_cases: set[str] | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> ImportReport:
    """Slice ``inputs`` and upload them; raise ImportFailedError unless every slice became a
    task."""
    volumes = find_volumes(inputs)
    splits = assign_splits([case_id_of(path) for path in volumes], split, test_cases)
    uploader = ProjectUploader(connection, project_id, batch_size)
    title = uploader.check_project()
    with tempfile.TemporaryDirectory(prefix="sugfw-slices-") as folder:
        slices = write_slices(
            volumes, Path(folder), slice_step=slice_step, limit=limit, axis=axis, splits=splits
        )
        log.info(
            "%d slice(s) from %d volume(s) → project %d (%s)",
            len(slices),
            len(volumes),
            project_id,
            title,
        )
        report = uploader.upload(slices)
    if report.failed:
        raise ImportFailedError(report.failure_message())
    return report
