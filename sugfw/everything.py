"""Everything mode (Eq. 2): prompt a whole grid, filter the masks, take the union.

Filters follow SAM's automatic mask generator, in its order, so that the SAM path reproduces
the stock generator's output: predicted IoU > ``pred_iou_thresh``; stability score (IoU of the
mask thresholded at ±1 logit) >= ``stability_thresh`` (a threshold of 0 disables either filter); box
non-maximum suppression at
``box_nms_thresh`` (1.0 disables it); then the SUGFW filter area < ``max_area_fraction`` · H · W,
which drops background-sized masks. The union of what is left is the slice's mask M_i.

Everything here stays on the model's device: prompts are decoded in chunks, survivors are kept as
boolean masks at the slice's resolution, and only the union leaves this module (plus, when asked,
the largest few kept masks one by one: the pre-annotation's separate regions).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from segment_anything.utils.amg import batched_mask_to_box, calculate_stability_score
from torchvision.ops import batched_nms

from sugfw.models.base import CanvasGeometry, EverythingSettings, SegmenterModel

STABILITY_OFFSET = 1.0  # SAM's stability_score_offset


def logits_to_slice(
    logits: torch.Tensor, geometry: CanvasGeometry, max_chunk: int = 64
) -> torch.Tensor:
    """Resample low-resolution logits (N, 256, 256) covering the canvas onto the slice's pixels.

    The same two bilinear steps as SAM's ``postprocess_masks`` (to the full canvas, crop the
    slice's area, down to the slice's size), so masks match SAM's own generator pixel for pixel.
    Done ``max_chunk`` masks at a time: a 1024² canvas costs 4 MB per mask.
    """
    out = []
    content = (geometry.content_height, geometry.content_width)
    for chunk in logits.split(max_chunk):
        x = chunk[:, None].float()
        if x.shape[-1] != geometry.canvas:
            x = F.interpolate(
                x, size=(geometry.canvas, geometry.canvas), mode="bilinear", align_corners=False
            )
        x = x[..., : content[0], : content[1]]
        if content != (geometry.height, geometry.width):
            x = F.interpolate(
                x, size=(geometry.height, geometry.width), mode="bilinear", align_corners=False
            )
        out.append(x[:, 0])
    return torch.cat(out) if out else logits.new_zeros(0, geometry.height, geometry.width)


@dataclass
class EverythingResult:
    union: torch.Tensor
    """(H, W) bool union of the kept masks."""
    kept: int
    """Number of masks in the union."""
    regions: torch.Tensor | None = None
    """(M, H, W) bool: the ``regions`` largest kept masks, largest first (ties in kept order),
    when asked for; their OR is ``union`` when ``kept <= regions``."""


def everything_union(
    model: SegmenterModel,
    embedding: torch.Tensor,
    geometry: CanvasGeometry,
    settings: EverythingSettings,
    prompt_batch_size: int,
    iou_first: bool = True,
    prompts: torch.Tensor | None = None,
    regions: int = 0,
) -> EverythingResult:
    """Run everything mode on one encoded slice (embedding (1, 256, 64, 64)) and return its union.

    With the IoU filter on, ``iou_first`` predicts IoU before decoding masks and upscales only
    the prompts that pass (same union; ``iou_first=False`` decodes every mask, for comparison).
    ``regions`` > 0 also returns up to that many kept masks, largest first; the union and the
    count do not depend on it.
    """
    if prompts is None:  # else: the view's own prompts (the original grid mapped onto the view)
        prompts = model.prompt_grid(geometry, settings.grid, settings.prompt_kind)
    masks, scores = [], []
    # A model with its own ``decode`` has no factored IoU; it decodes every mask.
    iou_first = (
        iou_first and settings.pred_iou_thresh > 0 and type(model).decode is SegmenterModel.decode
    )
    for chunk in prompts.split(prompt_batch_size):
        if iou_first:
            logits, iou = model.decode(
                embedding, chunk, settings.multimask, iou_thresh=settings.pred_iou_thresh
            )
        else:
            logits, iou = model.decode(embedding, chunk, settings.multimask)
        logits, iou = logits.flatten(0, 1), iou.flatten(0, 1).float()
        if settings.pred_iou_thresh > 0:  # a zero threshold disables the filter, as in SAM
            keep = iou > settings.pred_iou_thresh
            logits, iou = logits[keep], iou[keep]
        if len(iou) == 0:
            continue
        logits = logits_to_slice(logits, geometry)
        if settings.stability_thresh > 0:
            stability = calculate_stability_score(logits, model.mask_threshold, STABILITY_OFFSET)
            keep = stability >= settings.stability_thresh
            logits, iou = logits[keep], iou[keep]
        masks.append(logits > model.mask_threshold)
        scores.append(iou)
    empty = torch.zeros(geometry.height, geometry.width, dtype=torch.bool, device=embedding.device)
    none = empty.new_zeros(0, geometry.height, geometry.width) if regions > 0 else None
    if not masks:
        return EverythingResult(empty, 0, none)
    kept_masks = torch.cat(masks)
    kept_scores = torch.cat(scores)
    if settings.box_nms_thresh < 1.0 and len(kept_masks) > 1:
        boxes = batched_mask_to_box(kept_masks).float()
        order = batched_nms(
            boxes, kept_scores, torch.zeros_like(kept_scores), settings.box_nms_thresh
        )
        kept_masks = kept_masks[order]
    area = kept_masks.flatten(1).sum(1)
    small = area < settings.max_area_fraction * geometry.height * geometry.width
    kept_masks, area = kept_masks[small], area[small]
    if len(kept_masks) == 0:
        return EverythingResult(empty, 0, none)
    largest = None
    if regions > 0:
        order = torch.argsort(area, descending=True, stable=True)[:regions]
        largest = kept_masks[order]
    return EverythingResult(kept_masks.any(0), len(kept_masks), largest)
