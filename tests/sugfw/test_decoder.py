"""The shared-image and IoU-first decoders give the stock decoder's output (SAM, LiteMedSAM)."""

from __future__ import annotations

import pytest
import torch

from sugfw.everything import everything_union
from sugfw.models import build_model
from sugfw.models.base import CanvasGeometry, EverythingSettings, SegmenterModel
from sugfw.models.decoder import decode_prompts_on_one_image
from sugfw.models.iou_first import predict_iou


def compare_with_stock(model: SegmenterModel, prompts: torch.Tensor, multimask: bool) -> None:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        embedding = torch.randn(1, model.prompt_encoder.embed_dim, model.grid_size, model.grid_size)
    shared_logits, shared_iou = model.decode(embedding, prompts, multimask)
    stock_logits, stock_iou = model.decode(embedding, prompts, multimask, share_image=False)
    assert (
        shared_logits.shape
        == stock_logits.shape
        == (len(prompts), 3 if multimask else 1, 4 * model.grid_size, 4 * model.grid_size)
    )
    # Not vacuous: the prompts lead to different masks.
    assert (stock_logits[0] - stock_logits[-1]).abs().max() > 1e-2
    torch.testing.assert_close(shared_logits, stock_logits, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(shared_iou, stock_iou, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("multimask", [True, False])
def test_shared_decoder_matches_stock_on_sam_points(
    tiny_sam: SegmenterModel, multimask: bool
) -> None:
    geometry = CanvasGeometry.fit(40, 56, tiny_sam.canvas_size)
    compare_with_stock(tiny_sam, tiny_sam.prompt_grid(geometry, (3,), "points"), multimask)


@pytest.fixture(scope="module")
def litemedsam() -> SegmenterModel:
    return build_model("litemedsam", device="cpu")


def test_shared_decoder_matches_stock_on_litemedsam_boxes(litemedsam: SegmenterModel) -> None:
    geometry = CanvasGeometry.fit(200, 160, litemedsam.canvas_size)
    boxes = litemedsam.prompt_grid(geometry, (128,), "boxes")
    assert len(boxes) >= 3
    compare_with_stock(litemedsam, boxes, multimask=False)


def test_shared_decoder_refuses_a_batch_of_images(tiny_sam: SegmenterModel) -> None:
    two_images = torch.zeros(2, 32, 16, 16)
    with pytest.raises(ValueError, match="one image embedding"):
        decode_prompts_on_one_image(
            tiny_sam.mask_decoder,
            two_images,
            two_images[:1],
            torch.zeros(4, 2, 32),
            two_images[:1],
            True,
        )


# --- IoU-first decoding -------------------------------------------------------------------------


def random_embedding(model: SegmenterModel) -> torch.Tensor:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return torch.randn(1, model.prompt_encoder.embed_dim, model.grid_size, model.grid_size)


def decoder_inputs(model: SegmenterModel, prompts: torch.Tensor) -> tuple[torch.Tensor, ...]:
    if prompts.shape[-1] == 2:
        labels = torch.ones(len(prompts), 1, dtype=torch.int)
        sparse, dense = model.prompt_encoder(
            points=(prompts[:, None], labels), boxes=None, masks=None
        )
    else:
        sparse, dense = model.prompt_encoder(points=None, boxes=prompts, masks=None)
    return random_embedding(model), model.prompt_encoder.get_dense_pe(), sparse, dense[:1]


def litemedsam_boxes(model: SegmenterModel) -> torch.Tensor:
    return model.prompt_grid(
        CanvasGeometry.fit(183, 140, model.canvas_size), (64, 96, 128), "boxes"
    )


def tiny_sam_points(model: SegmenterModel) -> torch.Tensor:
    return model.prompt_grid(CanvasGeometry.fit(40, 56, model.canvas_size), (4,), "points")


@torch.inference_mode()
def check_factored_iou(
    model: SegmenterModel, prompts: torch.Tensor, multimask: bool, tol: float
) -> None:
    inputs = decoder_inputs(model, prompts)
    _, full_iou = decode_prompts_on_one_image(model.mask_decoder, *inputs, multimask)
    factored = predict_iou(model.mask_decoder, *inputs, multimask)
    assert factored.shape == full_iou.shape == (len(prompts), 3 if multimask else 1)
    assert full_iou.std() > 10 * tol  # the prompts differ, so agreement is not vacuous
    # Measured: 8e-7 on LiteMedSAM, 2e-7 on the tiny SAM; a wrong term shifts IoU by >1e-2.
    assert (factored - full_iou).abs().max() <= tol


def test_factored_iou_equals_full_decoder_on_litemedsam(litemedsam: SegmenterModel) -> None:
    check_factored_iou(litemedsam, litemedsam_boxes(litemedsam), multimask=False, tol=1e-5)


@pytest.mark.parametrize("multimask", [True, False])
def test_factored_iou_equals_full_decoder_on_sam(tiny_sam: SegmenterModel, multimask: bool) -> None:
    check_factored_iou(tiny_sam, tiny_sam_points(tiny_sam), multimask, tol=1e-5)


def upscaling_calls(model: SegmenterModel) -> tuple[list[int], torch.utils.hooks.RemovableHandle]:
    """Batch sizes seen by the decoder's output upscaling."""
    calls: list[int] = []
    handle = model.mask_decoder.output_upscaling.register_forward_hook(
        lambda m, i, o: calls.append(len(o))
    )
    return calls, handle


@pytest.mark.parametrize("quantile", [0.5, 0.9])
def test_iou_first_decode_returns_the_full_rows_of_every_passing_prompt(
    litemedsam: SegmenterModel, quantile: float
) -> None:
    boxes = litemedsam_boxes(litemedsam)
    embedding = random_embedding(litemedsam)
    full_logits, full_iou = litemedsam.decode(embedding, boxes, multimask=False)
    # A threshold just below one prompt's IoU: that prompt passes by 1e-7 and must not be lost.
    thresh = float(torch.quantile(full_iou, quantile)) - 1e-7
    passing = (full_iou > thresh).any(1)
    assert 0 < passing.sum() < len(boxes)
    calls, handle = upscaling_calls(litemedsam)
    try:
        logits, iou = litemedsam.decode(embedding, boxes, multimask=False, iou_thresh=thresh)
    finally:
        handle.remove()
    assert len(iou) == passing.sum()  # no survivor lost, no extra prompt
    assert sum(calls) < len(boxes)  # only candidates were upscaled
    torch.testing.assert_close(iou, full_iou[passing], rtol=0, atol=1e-5)
    torch.testing.assert_close(logits, full_logits[passing], rtol=0, atol=1e-4)


@pytest.mark.parametrize("multimask", [True, False])
def test_iou_first_decode_on_sam_keeps_every_prompt_with_a_passing_mask(
    tiny_sam: SegmenterModel, multimask: bool
) -> None:
    points = tiny_sam_points(tiny_sam)
    embedding = random_embedding(tiny_sam)
    full_logits, full_iou = tiny_sam.decode(embedding, points, multimask)
    thresh = float(torch.quantile(full_iou.flatten(), 0.75)) - 1e-7
    passing = (full_iou > thresh).any(1)
    assert 0 < passing.sum() < len(points)
    logits, iou = tiny_sam.decode(embedding, points, multimask, iou_thresh=thresh)
    assert len(iou) == passing.sum()
    torch.testing.assert_close(iou, full_iou[passing], rtol=0, atol=1e-5)
    torch.testing.assert_close(logits, full_logits[passing], rtol=0, atol=1e-4)


def test_all_rejected_batch_is_never_upscaled(litemedsam: SegmenterModel) -> None:
    boxes = litemedsam_boxes(litemedsam)
    embedding = random_embedding(litemedsam)
    _, full_iou = litemedsam.decode(embedding, boxes, multimask=False)
    thresh = float(full_iou.max()) + 0.01
    geometry = CanvasGeometry.fit(183, 140, litemedsam.canvas_size)
    settings = EverythingSettings.for_model(litemedsam, pred_iou_thresh=thresh)
    calls, handle = upscaling_calls(litemedsam)
    try:
        logits, iou = litemedsam.decode(embedding, boxes, multimask=False, iou_thresh=thresh)
        result = everything_union(litemedsam, embedding, geometry, settings, prompt_batch_size=32)
    finally:
        handle.remove()
    assert calls == []
    assert logits.shape == (0, 1, 256, 256) and iou.shape == (0, 1)
    assert result.kept == 0 and result.union.shape == (183, 140) and not result.union.any()


def test_everything_union_iou_first_equals_full_decoding(litemedsam: SegmenterModel) -> None:
    # Loose thresholds so that several masks survive the IoU filter on a random embedding.
    embedding = random_embedding(litemedsam)
    geometry = CanvasGeometry.fit(183, 140, litemedsam.canvas_size)
    _, full_iou = litemedsam.decode(embedding, litemedsam_boxes(litemedsam), multimask=False)
    thresh = float(torch.quantile(full_iou, 0.7))
    settings = EverythingSettings.for_model(
        litemedsam, pred_iou_thresh=thresh, stability_thresh=0.0
    )
    fast = everything_union(litemedsam, embedding, geometry, settings, prompt_batch_size=32)
    full = everything_union(
        litemedsam, embedding, geometry, settings, prompt_batch_size=32, iou_first=False
    )
    assert fast.kept == full.kept >= 2
    assert torch.equal(fast.union, full.union)
