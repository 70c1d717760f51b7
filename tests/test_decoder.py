"""The shared-image decoder gives the stock SAM decoder's output on SAM and LiteMedSAM decoders."""

from __future__ import annotations

import pytest
import torch

from sugfw.models import build_model
from sugfw.models.base import CanvasGeometry, SegmenterModel
from sugfw.models.decoder import decode_prompts_on_one_image


def compare_with_stock(model: SegmenterModel, prompts: torch.Tensor, multimask: bool) -> None:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        embedding = torch.randn(1, model.prompt_encoder.embed_dim, model.grid_size, model.grid_size)
    shared_logits, shared_iou = model.decode(embedding, prompts, multimask)
    stock_logits, stock_iou = model.decode(embedding, prompts, multimask, share_image=False)
    assert shared_logits.shape == stock_logits.shape == (len(prompts), 3 if multimask else 1, 4 * model.grid_size, 4 * model.grid_size)
    # Not vacuous: the prompts lead to different masks.
    assert (stock_logits[0] - stock_logits[-1]).abs().max() > 1e-2
    torch.testing.assert_close(shared_logits, stock_logits, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(shared_iou, stock_iou, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("multimask", [True, False])
def test_shared_decoder_matches_stock_on_sam_points(tiny_sam: SegmenterModel, multimask: bool) -> None:
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
            tiny_sam.mask_decoder, two_images, two_images[:1], torch.zeros(4, 2, 32), two_images[:1], True
        )
