"""A prediction as Label Studio stores it: the SAM union mask as a brush (or polygon)
pre-annotation."""

from __future__ import annotations

from typing import Any


def prefill_prediction(
    result: list[dict[str, Any]],
    model_version: str,
    score: float | None,
    cluster: int | None = None,
) -> dict[str, Any]:
    """``{result, score, model_version[, cluster]}``; ``result`` from
    ``backend.labelstudio.brush.mask_to_result``.

    ``score`` is the queue position (lower = label first), or ``None`` for a task outside the queue.
    """
    prediction: dict[str, Any] = {"result": result, "score": score, "model_version": model_version}
    if cluster is not None:
        prediction["cluster"] = int(cluster)
    return prediction
