"""On a CUDA device: records equal the CPU's, and the fast decoders equal the plain ones.

Skipped without CUDA (``benchmarks/gpu_check.sh`` runs these on a GPU machine). Tolerances: cuDNN
convolutions may use TF32 and reduction orders differ, so CUDA records may differ from CPU
records by a few pixels at mask borders; the bounds below (union IoU >= 0.99, |ΔÛ| <= 1e-3)
are what such rounding can explain, while a wrong kernel or device mix-up fails them.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sugfw.everything import EverythingSettings
from sugfw.metrics import mask_iou
from sugfw.models import build_model
from sugfw.models.base import CanvasGeometry
from sugfw.models.decoder import decode_prompts_on_one_image
from sugfw.models.iou_first import predict_iou
from sugfw.reference import score_image_plain
from sugfw.scoring import Scorer, ScoringSettings

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not torch.cuda.is_available(), reason="needs a CUDA device (run benchmarks/gpu_check.sh)"
    ),
]


def disk_slice(height: int = 160, width: int = 200, seed: int = 0) -> np.ndarray:
    yy, xx = np.mgrid[:height, :width]
    disk = (yy - 80) ** 2 + (xx - 110) ** 2 < 30**2
    noise = np.random.default_rng(seed).normal(0, 0.02, (height, width))
    image = 0.3 + 0.03 * xx / width + 0.5 * disk + noise
    image[10:40, 15:50] += 0.4
    return image.astype(np.float32)


@pytest.fixture(scope="module")
def models():
    return build_model("litemedsam", device="cpu"), build_model("litemedsam", device="cuda")


def test_cuda_records_equal_cpu_records_on_litemedsam(models) -> None:
    cpu, cuda = models
    settings = ScoringSettings(everything=EverythingSettings.for_model(cpu), k=2, seed=1)
    image = disk_slice()
    on_cpu = Scorer(cpu, settings).score_image(image)
    on_cuda = Scorer(cuda, settings).score_image(image)
    assert on_cpu.masks_kept >= 1
    assert mask_iou(on_cpu.union_mask, on_cuda.union_mask) >= 0.99
    assert abs(on_cpu.uncertainty - on_cuda.uncertainty) <= 1e-3
    np.testing.assert_allclose(on_cpu.features_pgdr, on_cuda.features_pgdr, rtol=1e-2, atol=1e-3)


def test_fast_path_equals_plain_path_on_cuda(models) -> None:
    _, cuda = models
    settings = ScoringSettings(
        everything=EverythingSettings.for_model(cuda, grid=(96, 128)), k=2, seed=3
    )
    image = disk_slice(96, 120, seed=1)
    fast = Scorer(cuda, settings).score_image(image)
    plain = score_image_plain(cuda, image, settings)
    assert fast.masks_kept == plain.masks_kept >= 1
    np.testing.assert_array_equal(fast.union_mask, plain.union_mask)
    assert fast.uncertainty == pytest.approx(plain.uncertainty, abs=1e-6)


@torch.inference_mode()
def test_factored_iou_equals_full_decoder_on_cuda(models) -> None:
    _, cuda = models
    boxes = cuda.prompt_grid(
        CanvasGeometry.fit(183, 140, cuda.canvas_size), (64, 96, 128), "boxes"
    ).cuda()
    torch.manual_seed(0)
    embedding = torch.randn(1, 256, 64, 64, device="cuda")
    sparse, dense = cuda.prompt_encoder(points=None, boxes=boxes, masks=None)
    inputs = (embedding, cuda.prompt_encoder.get_dense_pe(), sparse, dense[:1])
    _, full_iou = decode_prompts_on_one_image(cuda.mask_decoder, *inputs, False)
    assert (predict_iou(cuda.mask_decoder, *inputs, False) - full_iou).abs().max() <= 1e-4
