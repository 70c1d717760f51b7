"""ProbCover (Yehuda et al., NeurIPS 2022): greedy max coverage of δ-balls on unit features.

1. Features are L2-normalised (all-zero rows are rejected).
2. Graph: a directed edge x -> y for every pair with ``||x - y|| < δ`` (self-loops included),
   built for all N slices in row blocks. (The official builder loops over
   ``N // 500`` full blocks, so it drops the last partial block and builds nothing below 500
   points; that is not reproduced.)
3. Greedy: take the slice of largest out-degree (uncovered slices in its ball), mark its ball
   covered, delete every edge into covered slices, repeat. Ties go to the lowest slice index.
4. Once every slice is covered all degrees are 0: the rest of the queue, picks included if the
   budget is not yet reached, is a seeded random permutation (``numpy.random.default_rng(seed)``)
   of the remaining slices in index order. (The official loop would take the argmax of all-zero
   degrees, i.e. slice 0, again.) The greedy picks beyond the budget are the continuation.
5. δ, unless given: the largest radius whose ball purity stays >= α = 0.95. Purity(δ) is the
   share of slices whose δ-ball holds only slices of their own k-means pseudo-label; k-means is
   GSCU's ``cluster_features`` on the unit features with k = budget (ProbCover uses the number of
   classes, which slices for segmentation do not have; pass ``n_pseudo_labels`` to change it).
   A ball is pure iff δ <= r_x, the distance from x to its nearest differently-labelled slice,
   so purity only changes at the values r_x; the search runs over exactly that grid and returns
   the ceil(α N)-th largest r_x, which is the largest δ with purity >= α (any coarser grid
   would return its largest value not above it). With one pseudo-label (budget 1) every ball is
   pure, δ is infinite, and the first pick is slice 0, whose ball covers everything.

Every slice has cluster id -1: the pseudo-labels only set δ. Costs: two N × N boolean arrays
(50 MB each at N = 7040) and two passes of pairwise distances.
"""

from __future__ import annotations

import math
from fractions import Fraction
from numbers import Integral, Real

import numpy as np
from scipy.spatial.distance import cdist

from sugfw.errors import InvalidInputError
from sugfw.selection.base import Selection
from sugfw.selection.clustering import cluster_features
from sugfw.selection.inputs import check_inputs, l2_normalised

PURITY_ALPHA = 0.95
"""Required share of pure balls when δ is searched."""

_ROW_BLOCK = 1024  # rows of the pairwise-distance matrix held at once


def probcover(
    features: np.ndarray,
    uncertainty: np.ndarray,
    budget: int,
    seed: int,
    *,
    delta: float | None = None,
    alpha: float = PURITY_ALPHA,
    n_pseudo_labels: int | None = None,
) -> Selection:
    """Greedy δ-ball cover of the unit features; δ by ball purity unless given."""
    features, _, budget = check_inputs(features, uncertainty, budget, seed)
    unit = l2_normalised(features)
    n = len(unit)
    if delta is None:
        alpha = _alpha(alpha)
        k = budget if n_pseudo_labels is None else _pseudo_label_count(n_pseudo_labels, n)
        delta = largest_pure_radius(unit, cluster_features(unit, k, seed), alpha)
    else:
        delta = _explicit_delta(delta)
    covered_first = greedy_cover(_ball_graph(unit, delta))
    rest = np.setdiff1d(np.arange(n), covered_first)
    rest = rest[np.random.default_rng(seed).permutation(rest.size)]
    order = np.concatenate([covered_first, rest]).astype(np.int64)
    return Selection(order=order, clusters=np.full(n, -1, dtype=np.int64), n_selected=budget)


def largest_pure_radius(unit: np.ndarray, pseudo_labels: np.ndarray, alpha: float) -> float:
    """Largest δ for which at least ``alpha`` of the δ-balls hold a single pseudo-label."""
    n = len(unit)
    radius = np.empty(n)
    for rows in _row_blocks(n):
        distance = cdist(unit[rows], unit)
        distance[pseudo_labels[rows][:, None] == pseudo_labels[None, :]] = np.inf
        radius[rows] = distance.min(axis=1)
    n_pure = math.ceil(Fraction(repr(float(alpha))) * n)  # exact: 0.95 * 20 is 19, not 19.000...1
    return float(np.sort(radius)[::-1][n_pure - 1])


def greedy_cover(graph: np.ndarray) -> np.ndarray:
    """Greedy picks on a boolean graph (``graph[x, y]``: x covers y) until all is covered."""
    graph = graph.copy()
    degree = graph.sum(axis=1)
    picks = []
    while degree.max() > 0:
        chosen = int(np.argmax(degree))
        newly_covered = np.flatnonzero(graph[chosen])
        degree -= graph[:, newly_covered].sum(axis=1)
        graph[:, newly_covered] = False  # delete the edges into covered slices
        picks.append(chosen)
    return np.asarray(picks, dtype=np.int64)


def _ball_graph(unit: np.ndarray, delta: float) -> np.ndarray:
    n = len(unit)
    graph = np.empty((n, n), dtype=bool)
    for rows in _row_blocks(n):
        graph[rows] = cdist(unit[rows], unit) < delta
    return graph


def _row_blocks(n: int) -> list[slice]:
    return [slice(start, min(start + _ROW_BLOCK, n)) for start in range(0, n, _ROW_BLOCK)]


def _explicit_delta(delta: object) -> float:
    if isinstance(delta, bool) or not isinstance(delta, Real) or not 0 < delta < math.inf:
        raise InvalidInputError(
            f"delta {delta!r} is invalid: expected a finite ball radius > 0 "
            "(features are unit vectors, so distances lie in [0, 2])"
        )
    return float(delta)


def _alpha(alpha: object) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, Real) or not 0 < alpha <= 1:
        raise InvalidInputError(f"alpha {alpha!r} is invalid: expected a purity share in (0, 1]")
    return float(alpha)


def _pseudo_label_count(k: object, n: int) -> int:
    if isinstance(k, bool) or not isinstance(k, Integral) or not 1 <= k <= n:
        raise InvalidInputError(
            f"n_pseudo_labels {k!r} is invalid: expected an int in [1, {n}] (the pool size)"
        )
    return int(k)
