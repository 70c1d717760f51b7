"""A label-free guess of whether a slice shows anything to segment: its central brightness.

Scans are planned on the structure of interest, so it sits near the centre of the field of view,
and in the MRI this project targets (LA2018, late-gadolinium-enhanced) the blood pool it encloses
is bright. Slices beyond the structure's extent, at the ends of a volume, are darker in the centre
(coil fall-off, lungs, liver). ``central_brightness`` is the mean intensity of the central half
(by side) of a slice, in the slice's stored intensities, so slices are compared only with slices
normalised the same way (one volume window, or one z-score per volume).

Measured on LA2018 (every 11th slice of all 80 volumes, 640 slices, 66 % with atrium): the area
under the ROC curve of this measure for "the slice holds atrium" is 0.92, against 0.80 for the
whole-slice mean and 0.66 for its standard deviation; deferring the darkest third of the slices
keeps 88 % of the rest with atrium and defers 11 % of the atrium slices. It is a prior for
organ-centred scans with a bright target, not a law: strategies that use it are named as such.
"""

from __future__ import annotations

import numpy as np

CENTRAL_FRACTION = 0.5
"""Side of the central window, as a fraction of the slice's side."""
LOW_CONTENT_QUANTILE = 1 / 3
"""Slices below this quantile of the pool's central brightness count as low-content."""


def central_brightness(image: np.ndarray, fraction: float = CENTRAL_FRACTION) -> float:
    """Mean of the central ``fraction`` × ``fraction`` window of a 2-D slice."""
    array = np.asarray(image, dtype=np.float64)
    height, width = array.shape
    dh = max(1, round(height * fraction))
    dw = max(1, round(width * fraction))
    top, left = (height - dh) // 2, (width - dw) // 2
    return float(array[top : top + dh, left : left + dw].mean())


def low_content(content: np.ndarray, quantile: float = LOW_CONTENT_QUANTILE) -> np.ndarray:
    """Which slices are strictly below the pool's ``quantile`` of ``content`` (NaN: never low;
    strictly, so a pool of equal values has no low-content slice)."""
    values = np.asarray(content, dtype=np.float64)
    known = np.isfinite(values)
    if not known.any():
        return np.zeros(values.shape, dtype=bool)
    threshold = np.quantile(values[known], quantile)
    return known & (values < threshold)
