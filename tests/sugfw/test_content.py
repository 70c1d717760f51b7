"""Central brightness and the content-aware GSCU that defers low-content slices."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sugfw.content import central_brightness, low_content
from sugfw.errors import InvalidInputError
from sugfw.records import RecordIndex
from sugfw.selection import get_strategy, gscu_content_aware, gscu_tie_aware


def test_central_brightness_is_the_mean_of_the_central_half():
    image = np.zeros((8, 8))
    image[2:6, 2:6] = 4.0  # exactly the central 4 × 4 window
    image[0, 0] = 100.0  # outside it: ignored
    assert central_brightness(image) == 4.0
    image[3, 3] = 20.0  # one of 16 central pixels: mean (15 * 4 + 20) / 16 = 5
    assert central_brightness(image) == 5.0


def test_central_window_of_an_odd_side():
    image = np.arange(25, dtype=float).reshape(5, 5)
    # round(5 * 0.5) = 2 (half to even) -> rows/cols 1..2: values 6, 7, 11, 12 -> 9.
    assert central_brightness(image) == 9.0


def test_low_content_is_the_lower_third_and_ignores_nan():
    content = np.array([5.0, 1.0, 3.0, np.nan, 2.0, 4.0, 6.0])
    # Known values 1..6: the 1/3 quantile (linear) is 1 + (5 * 1/3) = 2.67 -> 1 and 2 are low.
    np.testing.assert_array_equal(low_content(content), [0, 1, 0, 0, 1, 0, 0])
    assert not low_content(np.full(3, np.nan)).any()


def _pool():
    # Two far-apart groups of four; uncertainties all distinct (no tie).
    features = np.array([[0, 0], [0, 1], [1, 0], [1, 1], [50, 50], [50, 51], [51, 50], [51, 51]])
    uncertainty = np.array([0.51, 0.52, 0.53, 0.54, 0.55, 0.56, 0.57, 0.58])
    return features.astype(float), uncertainty


def test_content_aware_never_picks_a_dark_slice_while_bright_ones_are_left():
    features, uncertainty = _pool()
    # Sorted 1 2 3 8 9 9 9 9: the 1/3 quantile is 3 + (7/3 - 2) * 5 = 4.67 -> slices 0, 1, 4 low.
    content = np.array([1.0, 2.0, 9.0, 9.0, 3.0, 9.0, 8.0, 9.0])
    for seed in range(5):
        selection = gscu_content_aware(features, uncertainty, 2, seed, content)
        assert set(selection.order[:5]) == {2, 3, 5, 6, 7}
        assert set(selection.order[5:]) == {0, 1, 4}
        assert selection.clusters[selection.picks].tolist() != [selection.clusters[0]] * 2


def test_content_aware_also_defers_ties():
    features, uncertainty = _pool()
    uncertainty = uncertainty.copy()
    uncertainty[[2, 5]] = 0.5
    content = np.full(8, 1.0)
    content[[0, 4]] = 0.0  # the lower third of {0, 0, 1 ...}: only the zeros
    selection = gscu_content_aware(features, uncertainty, 2, 0, content)
    assert set(selection.order[:4]) == {1, 3, 6, 7}
    tie_aware = gscu_tie_aware(features, uncertainty, 2, 0)
    assert set(tie_aware.order[:6]) == {0, 1, 3, 4, 6, 7}


def test_content_must_match_the_pool():
    features, uncertainty = _pool()
    with pytest.raises(InvalidInputError, match="one value per slice"):
        gscu_content_aware(features, uncertainty, 2, 0, np.ones(3))


def test_strategy_refuses_an_index_without_content(tmp_path: Path):
    features, uncertainty = _pool()
    names = np.array([f"s{i}" for i in range(8)])
    index = RecordIndex(names, names, np.arange(8), names, features, features, uncertainty)
    spec = get_strategy("gscu_content_aware")
    with pytest.raises(InvalidInputError, match="central brightness"):
        spec.run(index, 2, 0)
    index.content = np.linspace(0, 1, 8)
    assert spec.run(index, 2, 0).n_selected == 2
    # Saved and loaded with the column; an index saved before it existed loads as unknown.
    index.save(tmp_path / "records.npz")
    np.testing.assert_array_equal(RecordIndex.load(tmp_path / "records.npz").content, index.content)
    with np.load(tmp_path / "records.npz") as data:
        old = {k: data[k] for k in data.files if k != "content"}
    np.savez(tmp_path / "old.npz", **old)
    assert np.isnan(RecordIndex.load(tmp_path / "old.npz").content).all()
