"""The one signature every selection strategy shares.

A strategy maps per-slice features and uncertainties to an annotation queue over ALL slices:
``select(features, uncertainty, budget, seed) -> Selection``. The first ``budget`` entries of
``Selection.order`` are the strategy's picks; the rest is its continuation of the queue.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class Selection:
    order: np.ndarray
    """Permutation of ``range(N)``: slice indices in annotation order, picks first."""
    clusters: np.ndarray
    """Cluster id of every slice (indexed by slice, length N); -1 where a strategy has none."""
    n_selected: int
    """The budget M: ``order[:M]`` are the strategy's picks."""

    @property
    def picks(self) -> np.ndarray:
        return self.order[: self.n_selected]

    def ranks(self) -> np.ndarray:
        """Queue position of every slice (0 = label first), indexed by slice."""
        ranks = np.empty(len(self.order), dtype=np.int64)
        ranks[self.order] = np.arange(len(self.order))
        return ranks


class SelectionStrategy(Protocol):
    def __call__(
        self, features: np.ndarray, uncertainty: np.ndarray, budget: int, seed: int
    ) -> Selection: ...
