"""Intensity windowing: the one percentile window that scoring and slice export share.

Scoring feeds the model the slice clipped to its [P_low, P_high] percentiles and scaled to [0, 1];
exporting a volume to 8-bit PNG slices applies the same window to the whole volume. One function
keeps the two in step.
"""

from __future__ import annotations

import numpy as np


def unit_window(values: np.ndarray, percentiles: tuple[float, float]) -> np.ndarray:
    """Clip to the given percentiles of ``values`` and scale to [0, 1], in float64.

    A constant input (no window to scale by) becomes zeros.
    """
    low, high = np.percentile(values, percentiles)
    if not high > low:
        return np.zeros(values.shape, dtype=np.float64)
    return (np.clip(values.astype(np.float64), low, high) - low) / (high - low)


def scale_intensities(image: np.ndarray, percentiles: tuple[float, float]) -> np.ndarray:
    """``unit_window`` as float32: the model's input scale."""
    return unit_window(image, percentiles).astype(np.float32)


def window_to_uint8(volume: np.ndarray, percentiles: tuple[float, float]) -> np.ndarray:
    """``unit_window`` mapped to 0..255 (rounded to nearest): 8-bit slices for Label Studio."""
    return np.rint(unit_window(volume, percentiles) * 255.0).astype(np.uint8)
