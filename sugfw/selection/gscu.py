"""GSCU, greedy selection over clusters by uncertainty (paper Eq. 6-7), and its two ablations.

GSCU on features F (N, D), uncertainties u (N,) and a budget M:

1. k-means on F with C = M clusters: ``KMeans(n_clusters=M, init="k-means++", n_init=10,
   random_state=seed)`` on float64 copies of the features.
2. Cluster order: sklearn's label numbering depends on the k-means++ draw (and so on the seed and
   the sklearn version), so clusters are renumbered by their smallest member index: cluster 0 holds
   slice 0, cluster 1 the lowest slice not in cluster 0, and so on. Clusters are visited 0..C-1 in
   that order (the authors visit sklearn's labels 0..C-1). The result then depends only on the
   partition, and every seed that finds the same partition gives the same Selection.
3. First cluster: its member whose uncertainty is closest to the cluster's median uncertainty
   (``numpy.median``: the mean of the two middle values for an even count).
4. Each next cluster: its member maximising ``min |u - u_s|`` over every slice s selected so far.
5. Continuation to a full queue: after the M picks of round 1, further rounds apply rule 4 over the
   clusters in the same order; in each round every cluster with members left contributes one
   member, until every slice is queued. ``order[:M]`` is the paper's selection.

Ties (exact float64 equality) go to the lowest slice index, as ``argmin``/``argmax`` over the
members in index order do in the authors' code. ``Selection.clusters`` holds the renumbered ids.

k-means cannot form C non-empty clusters from fewer than C distinct feature rows; that raises
BudgetError. Should k-means still leave a cluster empty, that cluster has no id and the picks it
would have made come from the next round.

Ablations (same signature):
- ``gscu_without_clustering``: uncertainty-only uniform selection. Slices are sorted by
  uncertainty (ties by index); the picks are the sorted positions ``floor((i + 1/2) * N / M)``,
  i = 0..M-1, i.e. the slice holding the midpoint of each of M equal quantile bins (floor, not
  round: round-half-even would repeat positions when N = M). The rest of the queue follows rule 4
  over all remaining slices. Every slice has cluster id -1. (The authors' code has no such
  ablation; this definition is ours.)
- ``gscu_without_greedy``: the clusters and cluster order of GSCU, but a random member per cluster
  in every round (``numpy.random.default_rng(seed)``), for the picks and the continuation alike.
  (The authors draw with the unseeded global ``np.random.choice``.)
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from sugfw.selection.base import Selection
from sugfw.selection.clustering import cluster_features
from sugfw.selection.inputs import check_inputs


def gscu(features: np.ndarray, uncertainty: np.ndarray, budget: int, seed: int) -> Selection:
    """GSCU (Eq. 6-7): one slice per k-means cluster, greedily spread over uncertainty."""
    features, uncertainty, budget = check_inputs(features, uncertainty, budget, seed)
    clusters = cluster_features(features, budget, seed)
    choose = _greedy_uncertainty_chooser(uncertainty)
    order = _queue_by_rounds(_members_by_cluster(clusters), choose)
    return Selection(order=order, clusters=clusters, n_selected=budget)


def gscu_without_greedy(
    features: np.ndarray, uncertainty: np.ndarray, budget: int, seed: int
) -> Selection:
    """Ablation "w/o GS": GSCU's clusters, a seeded random member from each."""
    features, uncertainty, budget = check_inputs(features, uncertainty, budget, seed)
    clusters = cluster_features(features, budget, seed)
    rng = np.random.default_rng(seed)
    order = _queue_by_rounds(
        _members_by_cluster(clusters), lambda left: int(left[rng.integers(left.size)])
    )
    return Selection(order=order, clusters=clusters, n_selected=budget)


def gscu_without_clustering(
    features: np.ndarray, uncertainty: np.ndarray, budget: int, seed: int
) -> Selection:
    """Ablation "w/o clustering": M slices at evenly spaced uncertainty quantiles."""
    features, uncertainty, budget = check_inputs(features, uncertainty, budget, seed)
    n = len(uncertainty)
    by_uncertainty = np.argsort(uncertainty, kind="stable")
    positions = ((2 * np.arange(budget) + 1) * n) // (2 * budget)  # floor((i + 1/2) N / M), exact
    picks = by_uncertainty[positions]

    spread = _MaxMinDistance(uncertainty)
    for i in picks:
        spread.add(int(i))
    rest = np.setdiff1d(np.arange(n), picks)  # sorted, so ties go to the lowest index

    def farthest(left: np.ndarray) -> int:
        i = spread.farthest(left)
        spread.add(i)
        return i

    order = np.concatenate([picks, _queue_by_rounds([rest], farthest)])
    return Selection(
        order=order.astype(np.int64), clusters=np.full(n, -1, dtype=np.int64), n_selected=budget
    )


def _members_by_cluster(clusters: np.ndarray) -> list[np.ndarray]:
    return [np.flatnonzero(clusters == c) for c in range(int(clusters.max()) + 1)]


def _queue_by_rounds(
    members: list[np.ndarray], choose: Callable[[np.ndarray], int]
) -> np.ndarray:
    """Queue by rounds: each cluster (in list order) with members left adds ``choose(left)``.

    ``left`` is always sorted ascending, so first-of-ties in ``choose`` means lowest slice index.
    """
    remaining = [m for m in members if m.size]
    order: list[int] = []
    while remaining:
        still_left = []
        for left in remaining:
            chosen = choose(left)
            order.append(chosen)
            left = left[left != chosen]
            if left.size:
                still_left.append(left)
        remaining = still_left
    return np.asarray(order, dtype=np.int64)


class _MaxMinDistance:
    """Eq. 7 bookkeeping: each slice's uncertainty distance to its nearest selected slice."""

    def __init__(self, uncertainty: np.ndarray) -> None:
        self.uncertainty = uncertainty
        self.nearest = np.full(len(uncertainty), np.inf)

    def add(self, i: int) -> None:
        np.minimum(self.nearest, np.abs(self.uncertainty - self.uncertainty[i]), out=self.nearest)

    def farthest(self, candidates: np.ndarray) -> int:
        return int(candidates[np.argmax(self.nearest[candidates])])


def _greedy_uncertainty_chooser(uncertainty: np.ndarray) -> Callable[[np.ndarray], int]:
    spread = _MaxMinDistance(uncertainty)
    nothing_selected = True

    def choose(left: np.ndarray) -> int:
        nonlocal nothing_selected
        if nothing_selected:
            values = uncertainty[left]
            i = int(left[np.argmin(np.abs(values - np.median(values)))])
            nothing_selected = False
        else:
            i = spread.farthest(left)
        spread.add(i)
        return i

    return choose
