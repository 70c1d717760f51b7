"""Label Studio annotations as training data: which annotation counts, and its label map.

A task's latest submitted (non-cancelled) annotation is what a training run learns from; its
regions become an (H, W) label map (label index = 1 + the label's position in the labelling
config's control, 0 = background), and a label map drawn by the UNet goes back as result items.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from backend.labelstudio.brush import SegmentationControl, mask_to_result, result_to_mask
from sugfw.errors import InvalidInputError


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


def labels_to_result(labels: np.ndarray, control: SegmentationControl) -> list[dict[str, Any]]:
    """Result items for every label present in an (H, W) label map (index i → ``control.labels[i
    - 1]``)."""
    items = []
    for index, name in enumerate(control.labels, start=1):
        if (labels == index).any():
            items += mask_to_result(labels == index, control, name)
    return items
