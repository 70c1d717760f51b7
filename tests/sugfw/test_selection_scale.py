"""GSCU at project scale: the fast Eq. 7 bookkeeping gives the same queue as the direct rule."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

gscu_module = importlib.import_module("sugfw.selection.gscu")  # the module, not the function


class DirectMaxMin:
    """Eq. 7 as written: every slice's distance updated after each pick (O(N) a pick)."""

    def __init__(self, uncertainty: np.ndarray) -> None:
        self.uncertainty = np.asarray(uncertainty, dtype=np.float64)
        self.nearest = np.full(len(uncertainty), np.inf)

    def add(self, i: int) -> None:
        np.minimum(self.nearest, np.abs(self.uncertainty - self.uncertainty[i]), out=self.nearest)

    def nearest_of(self, candidates: np.ndarray) -> np.ndarray:
        return self.nearest[candidates]

    def farthest(self, candidates: np.ndarray) -> int:
        return int(candidates[np.argmax(self.nearest_of(candidates))])


def pool(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(12, 16))
    features = centres[rng.integers(12, size=n)] + 0.3 * rng.normal(size=(n, 16))
    # Realistic uncertainties: a third exactly 0.5 (empty unions), the rest few distinct values,
    # so ties in Eq. 7 are frequent.
    uncertainty = 0.5 + np.round(rng.uniform(0, 0.02, n), 4)
    uncertainty[rng.random(n) < 0.33] = 0.5
    return features.astype(np.float32), uncertainty


def test_distances_equal_the_direct_rule_pick_by_pick():
    rng = np.random.default_rng(1)
    u = np.round(rng.uniform(0.5, 0.52, 5000), 5)
    fast, direct = gscu_module._MaxMinDistance(u), DirectMaxMin(u)
    for step in range(1200):  # past several rebuilds of the sorted part
        candidates = np.sort(rng.choice(len(u), size=40, replace=False))
        assert np.array_equal(fast.nearest_of(candidates), direct.nearest_of(candidates)), step
        i = int(rng.integers(len(u)))
        fast.add(i)
        direct.add(i)


@pytest.mark.parametrize("strategy", ["gscu", "gscu_tie_aware", "gscu_index_order"])
def test_full_queue_equals_the_direct_rule(strategy, monkeypatch):
    features, uncertainty = pool(3000, seed=4)
    run = getattr(gscu_module, strategy)
    fast = run(features, uncertainty, 30, 0)
    monkeypatch.setattr(gscu_module, "_MaxMinDistance", DirectMaxMin)
    direct = run(features, uncertainty, 30, 0)
    assert np.array_equal(fast.order, direct.order)
    assert np.array_equal(fast.clusters, direct.clusters)
