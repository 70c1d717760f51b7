"""Record cache: exact round trip, keying by settings and weights, damaged entries, resuming a
run."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest

from sugfw.cache import RecordCache
from sugfw.everything import EverythingSettings
from sugfw.models import build_model
from sugfw.models.base import SegmenterModel
from sugfw.records import SliceRecord, content_hash, pack_regions
from sugfw.scoring import Scorer, ScoringSettings

# The tiny SAM on two threads spin-waits on a shared 2-core machine (conftest.one_torch_thread).
pytestmark = pytest.mark.usefixtures("one_torch_thread")

SETTINGS = {"model": "m", "checkpoint": "abc", "k": 10}


def make_record(seed: int = 0) -> SliceRecord:
    rng = np.random.default_rng(seed)
    image = rng.random((5, 7)).astype(np.float32)
    return SliceRecord(
        slice_id=f"case_z{seed:03d}",
        content_hash=content_hash(image),
        features_pgdr=rng.standard_normal(256).astype(np.float32),
        features_mean=rng.standard_normal(256).astype(np.float32),
        uncertainty=float(rng.random()),
        union_mask=rng.random((5, 7)) > 0.5,
        uncertainty_map=(0.5 + 0.25 * rng.random((5, 7))).astype(np.float16),
        masks_kept=3,
        content=float(image.mean()),
    )


def assert_same_record(actual: SliceRecord, expected: SliceRecord) -> None:
    for f in fields(SliceRecord):
        if f.name == "content":
            assert np.isclose(actual.content, expected.content, equal_nan=True)
            continue
        a, b = getattr(actual, f.name), getattr(expected, f.name)
        if isinstance(b, np.ndarray):
            assert a.dtype == b.dtype and a.shape == b.shape, f.name
            assert np.array_equal(a, b), f.name
        else:
            assert type(a) is type(b) and a == b, f.name


def test_put_then_get_returns_an_identical_record(tmp_path: Path) -> None:
    cache = RecordCache(tmp_path, SETTINGS)
    record = make_record()
    assert cache.get(record.content_hash) is None
    cache.put(record)
    assert len(cache) == 1
    assert_same_record(cache.get(record.content_hash), record)


def test_settings_choose_the_folder(tmp_path: Path) -> None:
    first = RecordCache(tmp_path, SETTINGS)
    same = RecordCache(tmp_path, dict(reversed(SETTINGS.items())))  # key order does not matter
    other = RecordCache(tmp_path, {**SETTINGS, "k": 5})
    assert same.folder == first.folder
    assert other.folder != first.folder
    record = make_record()
    first.put(record)
    assert other.get(record.content_hash) is None
    assert same.get(record.content_hash) is not None
    assert '"k": 5' in (other.folder / "settings.json").read_text()


def test_corrupt_entry_is_discarded(tmp_path: Path) -> None:
    cache = RecordCache(tmp_path, SETTINGS)
    record = make_record()
    cache.put(record)
    entry = cache.folder / f"{record.content_hash}.npz"
    entry.write_bytes(entry.read_bytes()[:50])  # a write cut short
    assert cache.get(record.content_hash) is None
    assert not entry.exists()
    assert len(cache) == 0


def test_separate_regions_round_trip(tmp_path: Path) -> None:
    cache = RecordCache(tmp_path, SETTINGS)
    record = make_record()
    regions = np.zeros((3, 5, 7), dtype=bool)
    regions[0, :3] = regions[1, 2:4, 1:] = regions[2, 4, :2] = True  # the first two overlap
    record.region_bits = pack_regions(regions)
    cache.put(record)
    loaded = cache.get(record.content_hash)
    assert_same_record(loaded, record)
    np.testing.assert_array_equal(loaded.regions(), regions)


def test_entry_from_before_separate_regions_loads_with_the_union_as_its_one_region(
    tmp_path: Path,
) -> None:
    cache = RecordCache(tmp_path, SETTINGS)
    record = make_record()
    cache.put(record)
    entry = cache.folder / f"{record.content_hash}.npz"
    with np.load(entry) as data:  # rewritten as the cache wrote it before: no region bits
        old = {name: data[name] for name in data.files if name != "region_bits"}
    np.savez_compressed(entry, **old)
    loaded = cache.get(record.content_hash)
    assert loaded is not None and entry.exists()  # valid: neither discarded nor rescored
    (region,) = loaded.regions()
    np.testing.assert_array_equal(region, record.union_mask)
    for name in ("features_pgdr", "features_mean", "union_mask", "uncertainty_map"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(record, name))
    assert (loaded.uncertainty, loaded.masks_kept) == (record.uncertainty, record.masks_kept)


def test_entry_from_before_content_was_cached_loads_with_it_unknown(tmp_path: Path) -> None:
    cache = RecordCache(tmp_path, SETTINGS)
    record = make_record()
    cache.put(record)
    assert cache.get(record.content_hash).content == record.content  # round trip, exact
    entry = cache.folder / f"{record.content_hash}.npz"
    with np.load(entry) as data:
        old = {name: data[name] for name in data.files if name != "content"}
    np.savez_compressed(entry, **old)
    loaded = cache.get(record.content_hash)
    assert loaded is not None and np.isnan(loaded.content)
    np.testing.assert_array_equal(loaded.features_pgdr, record.features_pgdr)
    pixels = np.full((6, 6), 2.0, dtype=np.float32)
    pixels[1:5, 1:5] = 10.0  # central 3 × 3 window (rows/cols 1..3): all 10
    assert cache.get(record.content_hash, pixels).content == 10.0  # filled from the pixels
    assert cache.get(record.content_hash).content == 10.0  # and the entry rewritten with it


def test_leftover_temporary_file_is_not_counted_as_an_entry(tmp_path: Path) -> None:
    # A run killed between writing the temporary file and renaming it leaves "<hash>.<pid>.tmp.npz".
    cache = RecordCache(tmp_path, SETTINGS)
    cache.put(make_record(0))
    (cache.folder / f"{make_record(1).content_hash}.4242.tmp.npz").write_bytes(b"partial")
    assert len(cache) == 1


# --- the scorer with a cache ----------------------------------------------------------------------


def tiny_settings(model: SegmenterModel) -> ScoringSettings:
    everything = EverythingSettings.for_model(
        model, grid=(4,), pred_iou_thresh=0.0, stability_thresh=0.0
    )
    return ScoringSettings(everything, k=2)


class CountingScorer(Scorer):
    """A scorer that counts the slices it actually computes."""

    computed: list[str]

    def _compute(self, image: np.ndarray, slice_id: str) -> SliceRecord:
        self.computed.append(slice_id)
        return super()._compute(image, slice_id)


def counting_scorer(model: SegmenterModel, cache_dir: Path) -> CountingScorer:
    scorer = CountingScorer(model, tiny_settings(model), cache_dir=cache_dir)
    scorer.computed = []
    return scorer


def test_rerun_resumes_from_the_cache(
    tiny_sam: SegmenterModel, textured_slice: Callable, tmp_path: Path
) -> None:
    first_image, second_image = textured_slice(seed=0), textured_slice(seed=1)
    interrupted = counting_scorer(tiny_sam, tmp_path)
    done = interrupted.score_image(first_image, "a")  # the run stops after the first slice

    rerun = counting_scorer(tiny_sam, tmp_path)
    again = rerun.score_image(first_image, "a")
    rerun.score_image(second_image, "b")
    assert rerun.computed == ["b"]  # only the slice that was not finished
    assert_same_record(again, done)


def test_cached_record_takes_the_new_slice_id(
    tiny_sam: SegmenterModel, textured_slice: Callable, tmp_path: Path
) -> None:
    # Identical pixels under another name (e.g. a copied file) reuse the entry but keep their own
    # id.
    image = textured_slice()
    counting_scorer(tiny_sam, tmp_path).score_image(image, "original")
    rerun = counting_scorer(tiny_sam, tmp_path)
    assert rerun.score_image(image, "copy").slice_id == "copy"
    assert rerun.computed == []


@pytest.mark.parametrize("name", ["litemedsam", "sam_vit_b"])
def test_random_weight_models_never_share_cache_entries(name: str, tmp_path: Path) -> None:
    first = build_model(name, device="cpu", random_weights=True)
    second = build_model(name, device="cpu", random_weights=True)
    assert first.checkpoint_id != second.checkpoint_id
    settings = tiny_settings(first)
    folders = {Scorer(m, settings, cache_dir=tmp_path).cache.folder for m in (first, second)}
    assert len(folders) == 2


def test_same_weights_share_cache_entries(tiny_sam: SegmenterModel, tmp_path: Path) -> None:
    # The contrast to the test above: a fixed checkpoint id maps to one folder.
    settings = tiny_settings(tiny_sam)
    first, second = (Scorer(tiny_sam, settings, cache_dir=tmp_path) for _ in range(2))
    assert first.cache.folder == second.cache.folder
