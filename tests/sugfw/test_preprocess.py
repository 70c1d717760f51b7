"""Percentile clipping and z-scoring of volumes."""

from __future__ import annotations

import numpy as np
import pytest

from sugfw.errors import InvalidInputError
from sugfw.segmentation.preprocess import clip_upper_percentile, normalise_volume, zscore


def test_normalise_volume_on_a_hand_computed_case():
    volume = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    # 75th percentile, linear interpolation: position 0.75·4 = 3 -> 4; clipped [1, 2, 3, 4, 4].
    # Mean 2.8; variance (1.8² + 0.8² + 0.2² + 1.2² + 1.2²)/5 = 6.8/5 = 1.36.
    expected = (np.array([1, 2, 3, 4, 4]) - 2.8) / (np.sqrt(1.36) + 1e-6)
    result = normalise_volume(volume, upper_percentile=75)
    assert result.dtype == np.float32
    np.testing.assert_allclose(result, expected, rtol=1e-6)


def test_default_clip_is_the_99_5th_percentile_and_leaves_the_lower_tail():
    volume = np.arange(200, dtype=np.float64).reshape(10, 20)
    # Position 0.995·199 = 198.005 between 198 and 199 -> 198.005; only 199 changes.
    clipped = clip_upper_percentile(volume)
    assert clipped.max() == pytest.approx(198.005)
    assert clipped.min() == 0.0
    assert np.count_nonzero(clipped != volume) == 1


def test_flat_volume_normalises_to_zeros():
    np.testing.assert_array_equal(zscore(np.full((3, 4), 7.0)), np.zeros((3, 4), np.float32))


@pytest.mark.parametrize(
    "volume, percentile, message",
    [
        (np.array([1.0, np.nan]), 99.5, "NaN"),
        (np.zeros((0, 4)), 99.5, "empty"),
        (np.ones(4), 0.0, "percentile"),
    ],
)
def test_bad_volumes_and_percentiles_are_rejected(volume, percentile, message):
    with pytest.raises(InvalidInputError, match=message):
        normalise_volume(volume, percentile)
