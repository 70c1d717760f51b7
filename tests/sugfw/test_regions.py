"""Separate regions: view 0's kept masks in the record, packed one bit each (published as one
Label Studio region apiece: tests/backend/test_prefill.py); the union, U, the features and the
queue do not change."""

from __future__ import annotations

import dataclasses
import pickle
from collections.abc import Callable

import numpy as np
import pytest
import torch

import sugfw.scoring
from sugfw.everything import EverythingSettings, everything_union
from sugfw.models.base import SegmenterModel
from sugfw.records import REGION_CAP, RecordIndex, SliceRecord, pack_regions, unpack_regions
from sugfw.scoring import Scorer, ScoringSettings, build_views
from sugfw.selection import gscu

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SCORES = ("features_pgdr", "features_mean", "union_mask", "uncertainty_map")


def overlapping_regions() -> np.ndarray:
    """Three regions, largest first; the second lies partly inside the first."""
    regions = np.zeros((3, 9, 11), dtype=bool)
    regions[0, 1:6, 1:8] = True  # 35 px
    regions[1, 4:8, 5:10] = True  # 20 px, 6 of them shared with the first
    regions[2, 8, 0:3] = True  # 3 px
    return regions


def record_with(regions: np.ndarray, kept: int | None = None) -> SliceRecord:
    union = regions.any(0)
    return SliceRecord(
        slice_id="s",
        content_hash="h",
        features_pgdr=np.zeros(256, np.float32),
        features_mean=np.zeros(256, np.float32),
        uncertainty=0.5,
        union_mask=union,
        uncertainty_map=np.zeros(union.shape, np.float16),
        masks_kept=len(regions) if kept is None else kept,
        region_bits=pack_regions(regions),
    )


# --- packing --------------------------------------------------------------------------------------


def test_pack_then_unpack_returns_the_regions_overlaps_included() -> None:
    regions = overlapping_regions()
    bits = pack_regions(regions)
    assert bits.dtype == np.uint8 and bits.shape == regions.shape[1:]
    np.testing.assert_array_equal(unpack_regions(bits), regions)
    full = np.ones((REGION_CAP, 2, 3), dtype=bool)
    np.testing.assert_array_equal(unpack_regions(pack_regions(full)), full)


def test_no_regions_and_too_many_regions() -> None:
    assert unpack_regions(pack_regions(np.zeros((0, 4, 5), bool))).shape == (0, 4, 5)
    assert unpack_regions(np.zeros((4, 5), np.uint8)).shape == (0, 4, 5)
    with pytest.raises(ValueError, match="expected"):
        pack_regions(np.zeros((REGION_CAP + 1, 4, 5), bool))


def test_a_record_without_region_bits_holds_its_union_as_the_one_region() -> None:
    regions = overlapping_regions()
    record = record_with(regions)
    old = dataclasses.replace(record, region_bits=None)
    (region,) = old.regions()
    np.testing.assert_array_equal(region, record.union_mask)
    empty = dataclasses.replace(record, union_mask=np.zeros((9, 11), bool), region_bits=None)
    assert empty.regions().shape == (0, 9, 11)


def test_dropping_the_union_drops_the_regions_and_the_rest_travels() -> None:
    record = record_with(overlapping_regions())
    # Ray ships records by pickling (cloudpickle when Ray is installed): the bits travel.
    try:
        from ray import cloudpickle as shipper
    except ImportError:
        shipper = pickle
    shipped = shipper.loads(shipper.dumps(record))
    np.testing.assert_array_equal(shipped.regions(), overlapping_regions())
    renamed = dataclasses.replace(shipped, slice_id="t")  # what the Ray pool does on arrival
    np.testing.assert_array_equal(renamed.regions(), overlapping_regions())
    # Scoring streams, the Ray pool and the backend job drop the maps this way to save memory.
    record.union_mask = record.uncertainty_map = None
    assert record.region_bits is None
    with pytest.raises(ValueError, match="dropped"):
        record.regions()


# --- scoring: the regions are view 0's kept masks; nothing else moves -------------------------


def settings_for(model: SegmenterModel, grid: int) -> ScoringSettings:
    everything = EverythingSettings.for_model(
        model, grid=(grid,), pred_iou_thresh=0.0, stability_thresh=0.0, box_nms_thresh=1.0
    )
    return ScoringSettings(everything, k=2)


@pytest.mark.parametrize("grid", [2, 4])
def test_record_regions_are_view_0s_largest_kept_masks(
    tiny_sam: SegmenterModel, textured_slice: Callable, grid: int
) -> None:
    image = textured_slice(seed=3)
    settings = settings_for(tiny_sam, grid)
    record = Scorer(tiny_sam, settings).score_image(image, "s")
    kept = record.masks_kept
    assert (kept > REGION_CAP) == (grid == 4)  # under and over the cap (4 and 17 masks here)
    # Every kept mask of view 0, computed on its own.
    _, views = build_views(image, settings, tiny_sam)
    with torch.inference_mode():
        embedding = tiny_sam.encode(tiny_sam.prepare(views.images[:1], views.geometry[:1]))
        every = everything_union(
            tiny_sam,
            embedding,
            views.geometry[0],
            settings.everything,
            64,
            prompts=views.prompts[0],
            regions=1000,
        )
    all_masks = every.regions.numpy()
    assert len(all_masks) == kept
    np.testing.assert_array_equal(all_masks.any(0), record.union_mask)  # union = OR of all kept
    regions = record.regions()
    assert len(regions) == min(kept, REGION_CAP)
    np.testing.assert_array_equal(regions, all_masks[: len(regions)])
    areas = regions.reshape(len(regions), -1).sum(1)
    left_out = all_masks[len(regions) :].sum((1, 2))
    assert (np.diff(areas) <= 0).all() and areas.min() >= left_out.max(initial=0)


def test_scores_and_queue_are_those_without_regions(
    tiny_sam: SegmenterModel, textured_slice: Callable, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_for(tiny_sam, 4)
    images = [textured_slice(seed=seed) for seed in range(4)]
    with_regions = [Scorer(tiny_sam, settings).score_image(image) for image in images]

    def without_regions(*args: object, **kwargs: object):  # the call as it was before regions
        kwargs.pop("regions", None)
        return everything_union(*args, **kwargs)

    monkeypatch.setattr(sugfw.scoring, "everything_union", without_regions)
    before = [Scorer(tiny_sam, settings).score_image(image) for image in images]
    for new, old in zip(with_regions, before):
        for name in SCORES:
            a, b = getattr(new, name), getattr(old, name)
            assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), name
        assert (new.uncertainty, new.masks_kept) == (old.uncertainty, old.masks_kept)
        assert len(new.regions()) == REGION_CAP and len(old.regions()) == 1  # only these differ
    index_new, index_old = RecordIndex.from_records(with_regions), RecordIndex.from_records(before)
    assert index_new.uncertainty.tobytes() == index_old.uncertainty.tobytes()
    order_new = gscu(index_new.features_pgdr, index_new.uncertainty, 2, 0).order
    order_old = gscu(index_old.features_pgdr, index_old.uncertainty, 2, 0).order
    np.testing.assert_array_equal(order_new, order_old)
