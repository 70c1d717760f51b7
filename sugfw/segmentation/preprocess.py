"""Intensity normalisation of a volume before slicing: upper percentile clip, then z-score.

The authors' README clips at the 99.5th percentile (the default here); their preprocessing code
clips at the 99th (``CODE_UPPER_PERCENTILE``). Only the upper tail is clipped, as in that code.
Statistics are per volume, so every slice of a case shares one scale.
"""

from __future__ import annotations

import numpy as np

from sugfw.errors import InvalidInputError

README_UPPER_PERCENTILE = 99.5
CODE_UPPER_PERCENTILE = 99.0
ZSCORE_EPS = 1e-6


def clip_upper_percentile(
    volume: np.ndarray, percentile: float = README_UPPER_PERCENTILE
) -> np.ndarray:
    """Clip intensities above the given percentile (linear interpolation, numpy's default)."""
    _check_volume(volume)
    if not 0 < percentile <= 100:
        raise InvalidInputError(f"percentile must be in (0, 100], got {percentile}")
    return np.minimum(volume, np.percentile(volume, percentile))


def zscore(volume: np.ndarray, eps: float = ZSCORE_EPS) -> np.ndarray:
    """(x − mean) / (std + eps) over the whole volume, as float32; eps keeps flat volumes finite."""
    _check_volume(volume)
    values = volume.astype(np.float64)
    return ((values - values.mean()) / (values.std() + eps)).astype(np.float32)


def normalise_volume(
    volume: np.ndarray, upper_percentile: float = README_UPPER_PERCENTILE
) -> np.ndarray:
    """Percentile clip then z-score of one volume (any number of dimensions), float32."""
    return zscore(clip_upper_percentile(volume, upper_percentile))


def _check_volume(volume: np.ndarray) -> None:
    if volume.size == 0:
        raise InvalidInputError(f"cannot normalise an empty volume of shape {volume.shape}")
    if not np.all(np.isfinite(volume)):
        raise InvalidInputError(
            "volume contains NaN or infinite intensities; expected finite values"
        )
