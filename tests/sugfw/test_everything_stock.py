"""``sugfw.everything`` claims that on the SAM path it reproduces SAM's stock automatic mask
generator (same filters, same order, same resampling): check it against
``segment_anything.SamAutomaticMaskGenerator`` itself, on the tiny SAM of ``conftest.py``.

The slice's longest side equals the tiny SAM's 256-pixel canvas, so neither side resizes the
image (the stock predictor resizes with PIL, sugfw with torch; those differ by design).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sugfw.everything import STABILITY_OFFSET, everything_union
from sugfw.models.base import CanvasGeometry, EverythingSettings

POINTS_PER_SIDE = 6
SIZE = (192, 256)  # (H, W): wide, so the canvas is padded at the bottom


def grey_slice(seed: int) -> np.ndarray:
    """uint8 texture with a bright blob: a few different masks for the random decoder."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[: SIZE[0], : SIZE[1]]
    blob = ((rows - 70 - 20 * seed) / 40) ** 2 + ((cols - 120) / 55) ** 2 <= 1
    image = (
        90
        + 40 * np.sin(rows / 9 + seed) * np.cos(cols / 13)
        + 15 * rng.standard_normal(SIZE)
        + 90 * blob
    )
    return np.clip(image, 0, 255).astype(np.uint8)


def stock_union(net, image: np.ndarray, iou_thresh: float, stability_thresh: float, nms: float):
    from segment_anything import SamAutomaticMaskGenerator

    generator = SamAutomaticMaskGenerator(
        net,
        points_per_side=POINTS_PER_SIDE,
        points_per_batch=16,
        pred_iou_thresh=iou_thresh,
        stability_score_thresh=stability_thresh,
        stability_score_offset=STABILITY_OFFSET,
        box_nms_thresh=nms,
        crop_n_layers=0,
        min_mask_region_area=0,
        output_mode="binary_mask",
    )
    records = generator.generate(np.repeat(image[..., None], 3, axis=2))
    union = np.zeros(image.shape, dtype=bool)
    for record in records:
        union |= record["segmentation"]
    return union, len(records)


def sugfw_union(model, image: np.ndarray, iou_thresh: float, stability_thresh: float, nms: float):
    settings = EverythingSettings.for_model(
        model,
        prompt_kind="points",
        grid=(POINTS_PER_SIDE,),
        pred_iou_thresh=iou_thresh,
        stability_thresh=stability_thresh,
        box_nms_thresh=nms,
        max_area_fraction=1.01,
        multimask=True,
    )
    geometry = CanvasGeometry.fit(*image.shape, model.canvas_size)
    batch = model.prepare([torch.from_numpy(image.astype(np.float32) / 255.0)], [geometry])
    embedding = model.encode(batch)
    result = everything_union(model, embedding, geometry, settings, prompt_batch_size=16)
    return result.union.cpu().numpy(), result.kept


@pytest.fixture
def sharp_sam(tiny_sam):
    """The tiny SAM with its mask logits scaled up 1000×, to the size a trained model's have:
    the random ones are ~1e-3, so every stability score would be 0 and that filter untestable."""
    with torch.no_grad():
        for mlp in tiny_sam.net.mask_decoder.output_hypernetworks_mlps:
            mlp.layers[-1].weight.mul_(1000.0)
            mlp.layers[-1].bias.mul_(1000.0)
    return tiny_sam


def decoded(model, image: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Predicted IoU and stability score of every mask of the point grid."""
    from segment_anything.utils.amg import calculate_stability_score

    from sugfw.everything import logits_to_slice

    geometry = CanvasGeometry.fit(*image.shape, model.canvas_size)
    embedding = model.encode(
        model.prepare([torch.from_numpy(image.astype(np.float32) / 255.0)], [geometry])
    )
    prompts = model.prompt_grid(geometry, (POINTS_PER_SIDE,), "points")
    logits, ious = model.decode(embedding, prompts, multimask=True)
    masks = logits_to_slice(logits.flatten(0, 1), geometry)
    return ious.flatten(), calculate_stability_score(masks, model.mask_threshold, STABILITY_OFFSET)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize(
    "iou_quantile,stability_quantile,nms",
    [(None, None, 1.0), (0.85, None, 0.7), (0.7, 0.5, 0.7)],
    ids=["no-filters", "iou+nms", "iou+stability+nms"],
)
def test_union_equals_the_stock_generators(
    sharp_sam, one_torch_thread, seed, iou_quantile, stability_quantile, nms
):
    image = grey_slice(seed)
    n_masks = 3 * POINTS_PER_SIDE**2
    with torch.inference_mode():
        # Thresholds from the model's own predictions, so that each filter removes some masks.
        ious, stability = decoded(sharp_sam, image)
        iou_thresh = 0.0 if iou_quantile is None else float(ious.quantile(iou_quantile))
        stability_thresh = 0.0
        if stability_quantile is not None:  # among the masks the IoU filter keeps: it drops some
            stability_thresh = float(stability[ious > iou_thresh].quantile(stability_quantile))
        if iou_quantile is not None:
            assert iou_thresh > 0  # a threshold <= 0 disables the filter on both sides
        expected, stock_kept = stock_union(sharp_sam.net, image, iou_thresh, stability_thresh, nms)
        union, kept = sugfw_union(sharp_sam, image, iou_thresh, stability_thresh, nms)
    assert 0 < expected.sum() < expected.size  # not a vacuous comparison
    assert kept == stock_kept
    if iou_quantile is None:
        assert kept == n_masks  # no filter: every mask of every point
    else:
        passing = int(((ious > iou_thresh) & (stability >= stability_thresh)).sum())
        assert 0 < kept < passing < n_masks  # each filter, NMS included, removed some masks
        if stability_quantile is not None:
            assert passing < int((ious > iou_thresh).sum())
    np.testing.assert_array_equal(union, expected)
