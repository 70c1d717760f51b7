"""The MSD / nnU-Net folder layout, read in one place (the benchmark's data sets and the import).

A data set root holds ``imagesTr/`` and ``labelsTr/``, optionally ``imagesTs/``, ``labelsTs/`` and
``dataset.json``. When ``dataset.json`` has a ``"training"`` list of ``{"image", "label"}``
entries (MSD), those pairs are used. Otherwise each label ``labelsXx/<case>.nii[.gz]`` is paired
with ``imagesXx/<case>_0000.nii[.gz]`` (nnU-Net) or ``imagesXx/<case>.nii[.gz]`` (MSD); other
channels (``_0001`` ...) are not used. Every ``imagesTr`` image needs a label; ``imagesTs`` images
without one are skipped (MSD ships its test labels separately, if at all).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from sugfw.data import VOLUME_SUFFIXES
from sugfw.errors import InvalidInputError

log = logging.getLogger(__name__)

Subset = Literal["train", "test"]
LABEL_FOLDERS = {"imagesTr": "labelsTr", "imagesTs": "labelsTs"}
"""Each image folder and the folder of its label maps."""
# nnU-Net names channels <case>_0000, <case>_0001, ...; MSD ids like la_003 have 3 digits.
_CHANNEL = re.compile(r"_(\d{4})$")


@dataclass(frozen=True)
class CaseFiles:
    case_id: str
    image: Path
    label: Path
    subset: Subset
    """"test" for ``imagesTs`` cases, "train" otherwise."""


def volume_stem(path: Path) -> str | None:
    """The file name without ``.nii[.gz]`` (any case); None for a file of another kind."""
    name = path.name
    for suffix in VOLUME_SUFFIXES:
        if name.lower().endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return None


def file_stem(path: Path) -> str:
    """:func:`volume_stem`, or the whole name for a file of another kind."""
    return volume_stem(path) or path.name


def volume_files(folder: Path) -> list[Path]:
    """The NIfTI files of ``folder``, sorted."""
    # Hidden files skipped: MSD archives carry macOS "._" resource forks beside each volume.
    return sorted(
        path
        for path in folder.iterdir()
        if path.is_file() and not path.name.startswith(".") and volume_stem(path) is not None
    )


def is_first_channel(path: Path) -> bool:
    """True unless the volume is an nnU-Net channel other than ``_0000``."""
    channel = _CHANNEL.search(volume_stem(path) or "")
    return channel is None or channel.group(1) == "0000"


def case_id_of(path: Path) -> str:
    """File name without ``.nii[.gz]`` and without nnU-Net's ``_0000`` channel suffix."""
    stem = volume_stem(path)
    if stem is None:
        raise InvalidInputError(f"{path}: not a NIfTI volume")
    channel = _CHANNEL.search(stem)
    return stem[: channel.start()] if channel and channel.group(1) == "0000" else stem


def training_images(folder: Path) -> Path:
    """``folder/imagesTr`` when ``folder`` is an MSD / nnU-Net root that has one, else
    ``folder``."""
    return folder / "imagesTr" if (folder / "imagesTr").is_dir() else folder


def label_volume_of(path: Path) -> Path | None:
    """The label map of an MSD / nnU-Net image ``<root>/imagesTr/<case>[_0000].nii[.gz]``:
    ``<root>/labelsTr/<case>.nii[.gz]`` (``imagesTs`` → ``labelsTs``), or None when there is
    none."""
    path = Path(path)
    if path.parent.name not in LABEL_FOLDERS:
        return None
    labels = path.parent.parent / LABEL_FOLDERS[path.parent.name]
    case = case_id_of(path)
    for suffix in VOLUME_SUFFIXES:
        candidate = labels / f"{case}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def is_msd_root(root: Path) -> bool:
    """``root`` holds ``imagesTr/`` or ``imagesTs/`` (a test-only folder counts too)."""
    return any((root / images).is_dir() for images in LABEL_FOLDERS)


def msd_pairs(root: Path) -> list[CaseFiles]:
    """The image/label pairs of an MSD / nnU-Net root (see the module docstring), unsorted."""
    listed = _dataset_json_pairs(root)
    if listed is None:
        listed = _folder_pairs(root / "imagesTr", root / "labelsTr", "train")
    return listed + _folder_pairs(root / "imagesTs", root / "labelsTs", "test")


def _dataset_json_pairs(root: Path) -> list[CaseFiles] | None:
    path = root / "dataset.json"
    if not path.is_file():
        return None
    try:
        description = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InvalidInputError(f"cannot read {path}: {error}") from error
    entries = description.get("training") if isinstance(description, dict) else None
    pairs_listed = isinstance(entries, list) and all(
        isinstance(entry, dict) and {"image", "label"} <= entry.keys() for entry in entries
    )
    if not pairs_listed:
        return None  # nnU-Net v2's dataset.json lists no pairs: match by file name instead
    pairs = []
    for entry in entries:
        image, label = root / entry["image"], root / entry["label"]
        for path_ in (image, label):
            if not path_.is_file():
                raise InvalidInputError(f"{path} lists {path_}, which does not exist")
        pairs.append(CaseFiles(file_stem(label), image, label, "train"))
    return pairs


def _folder_pairs(images_dir: Path, labels_dir: Path, subset: Subset) -> list[CaseFiles]:
    if not images_dir.is_dir():
        return []
    images = {file_stem(path): path for path in volume_files(images_dir)}
    labels = (
        {file_stem(path): path for path in volume_files(labels_dir)} if labels_dir.is_dir() else {}
    )
    pairs, used = [], set()
    for case_id, label in labels.items():
        image_key = f"{case_id}_0000" if f"{case_id}_0000" in images else case_id
        if image_key not in images:
            raise InvalidInputError(
                f"label {label} has no image: expected {images_dir / case_id}_0000.nii.gz or "
                f"{images_dir / case_id}.nii.gz"
            )
        pairs.append(CaseFiles(case_id, images[image_key], label, subset))
        used.add(image_key)
    # Other channels of a used case, or a _0000 channel whose label is named without it.
    unlabelled = [
        path
        for key, path in images.items()
        if key not in used and _CHANNEL.sub("", key) not in labels
    ]
    if unlabelled and subset == "train":
        raise InvalidInputError(
            f"{len(unlabelled)} training image(s) without a label in {labels_dir}, e.g. "
            f"{unlabelled[0]}"
        )
    if unlabelled:
        log.info("skipping %d unlabelled image(s) in %s", len(unlabelled), images_dir)
    return pairs
