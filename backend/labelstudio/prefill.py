"""A prediction as Label Studio stores it: SAM's kept masks as brush (or polygon) pre-annotation
regions."""

from __future__ import annotations

from typing import Any

import numpy as np

from backend.labelstudio.brush import SegmentationControl, mask_to_result
from sugfw.records import pack_regions, unpack_regions

REGION_ID_PREFIX = "sam-"


def region_results(record: Any, control: SegmentationControl) -> list[dict[str, Any]]:
    """Result items of a scored slice: each of its regions (``SliceRecord.regions``: the largest
    kept masks of SAM's everything mode, largest first, at most ``sugfw.records.REGION_CAP``) as
    its own region with the control's first label and its own id, so the annotator deletes a
    wrong one with one click instead of erasing it out of a merged blob.

    Overlapping masks are kept as drawn: SAM's masks nest (a structure and its parts), and taking
    the larger ones out of the smaller would leave a hole in whichever the annotator keeps;
    Label Studio shows overlapping brush regions, and the annotation is their union. Empty masks
    draw nothing and are left out. A stand-in record without region bits prefills its union as one
    region.
    """
    bits = getattr(record, "region_bits", None)
    if bits is None:
        bits = pack_regions(np.asarray(record.union_mask, dtype=bool)[None])
    items: list[dict[str, Any]] = []
    for mask in unpack_regions(bits):
        if mask.any():
            items += mask_to_result(mask, control)
    # Ids numbered in drawing order: deterministic, so a rescored slice publishes equal results.
    return [{**item, "id": f"{REGION_ID_PREFIX}{i + 1}"} for i, item in enumerate(items)]


def prefill_prediction(
    result: list[dict[str, Any]], model_version: str, score: float | None
) -> dict[str, Any]:
    """``{result, score, model_version}``; ``result`` from ``region_results`` (or
    ``backend.labelstudio.brush.mask_to_result``). No ``cluster``: Label Studio would serve the
    least-solved cluster first and break the published score order.

    ``score`` is the queue position (lower = label first), or ``None`` for a task outside the queue.
    """
    return {"result": result, "score": score, "model_version": model_version}
