"""A plain, unbatched scoring path, kept only to check the fast path against.

One image through the encoder at a time, one prompt through SAM's stock decoder at a time, every
filter
applied mask by mask with Python scalars and a hand-written greedy NMS on the CPU. It shares with
the fast path only what is tested on its own: augmentations, canvas geometry, the resampling of
logits onto the slice, and the Eq. 3–5 functions.
"""

from __future__ import annotations

import numpy as np
import torch

from sugfw.everything import STABILITY_OFFSET, EverythingSettings, logits_to_slice
from sugfw.models.base import CanvasGeometry, SegmenterModel
from sugfw.records import SliceRecord
from sugfw.scoring import ScoringSettings, autocast, build_views, finish_record


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two xyxy boxes in pixel-index coordinates (SAM's convention: no +1 on the sides)."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def mask_box(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        return np.zeros(4)
    return np.array([xs.min(), ys.min(), xs.max(), ys.max()], dtype=float)


def everything_union_plain(
    model: SegmenterModel,
    embedding: torch.Tensor,
    geometry: CanvasGeometry,
    settings: EverythingSettings,
    prompts: torch.Tensor | None = None,
) -> tuple[np.ndarray, int]:
    candidates: list[tuple[float, np.ndarray]] = []
    if prompts is None:
        prompts = model.prompt_grid(geometry, settings.grid, settings.prompt_kind)
    for prompt in prompts:
        logits, ious = model.decode(embedding, prompt[None], settings.multimask, share_image=False)
        for low, iou in zip(logits[0], ious[0]):
            iou = float(iou)
            if settings.pred_iou_thresh > 0 and not iou > settings.pred_iou_thresh:
                continue
            upscaled = logits_to_slice(low[None], geometry)[0].float().cpu().numpy()
            inner = (upscaled > model.mask_threshold + STABILITY_OFFSET).sum()
            outer = (upscaled > model.mask_threshold - STABILITY_OFFSET).sum()
            stability = inner / outer if outer else float("nan")
            if settings.stability_thresh > 0 and not stability >= settings.stability_thresh:
                continue
            candidates.append((iou, upscaled > model.mask_threshold))
    if settings.box_nms_thresh < 1.0:
        candidates = greedy_nms(candidates, settings.box_nms_thresh)
    limit = settings.max_area_fraction * geometry.height * geometry.width
    kept = [mask for _, mask in candidates if mask.sum() < limit]
    union = (
        np.any(kept, axis=0) if kept else np.zeros((geometry.height, geometry.width), dtype=bool)
    )
    return union, len(kept)


def greedy_nms(
    candidates: list[tuple[float, np.ndarray]], threshold: float
) -> list[tuple[float, np.ndarray]]:
    """Keep masks by descending score, dropping any whose box overlaps a kept box above
    ``threshold``."""
    kept: list[tuple[float, np.ndarray, np.ndarray]] = []
    for score, mask in sorted(candidates, key=lambda c: -c[0]):
        box = mask_box(mask)
        if all(box_iou(box, other) <= threshold for _, _, other in kept):
            kept.append((score, mask, box))
    return [(score, mask) for score, mask, _ in kept]


@torch.inference_mode()
def score_image_plain(
    model: SegmenterModel, image: np.ndarray, settings: ScoringSettings, slice_id: str = ""
) -> SliceRecord:
    image_hash, views = build_views(image, settings, model)
    unions, kept = [], 0
    with autocast(model, settings.precision):
        embeddings = [
            model.encode(model.prepare([img], [geo]))
            for img, geo in zip(views.images, views.geometry)
        ]
        for i, (embedding, geo) in enumerate(zip(embeddings, views.geometry)):
            union, count = everything_union_plain(
                model, embedding, geo, settings.everything, views.prompts[i]
            )
            unions.append(torch.from_numpy(union).to(model.device))
            kept = count if i == 0 else kept
        features = embeddings[0][0]
        if views.extra:
            features = model.encode(model.prepare(views.extra, [views.feature_geometry]))[0]
    return finish_record(slice_id, image_hash, views, unions, kept, features, settings)
