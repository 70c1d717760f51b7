"""Random selection: a seeded permutation of the pool.

The queue is ``numpy.random.default_rng(seed).permutation(N)``; its first ``budget`` entries are
the picks, so a larger budget extends a smaller one's picks. Features and uncertainty are
validated but not used. The paper reports Random as the mean over 5 seeds; averaging over seeds
is the caller's job (one call is one seed). Every slice has cluster id -1.
"""

from __future__ import annotations

import numpy as np

from sugfw.selection.base import Selection
from sugfw.selection.inputs import check_inputs


def random_selection(
    features: np.ndarray, uncertainty: np.ndarray, budget: int, seed: int
) -> Selection:
    """A uniformly random queue over all slices, reproducible from ``seed``."""
    features, _, budget = check_inputs(features, uncertainty, budget, seed)
    n = len(features)
    order = np.random.default_rng(seed).permutation(n).astype(np.int64)
    return Selection(order=order, clusters=np.full(n, -1, dtype=np.int64), n_selected=budget)
