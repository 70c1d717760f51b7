"""FPS as the SUGFW authors ran it: k-means into ceil(B/2) clusters, the farthest pair of each.

1. k-means into C = ceil(B/2) clusters: GSCU's ``cluster_features`` (``KMeans``, k-means++, 10
   restarts, ``random_state=seed``, clusters renumbered by their smallest member).
2. Per cluster, the two members farthest apart (Euclidean); the lower slice index of the pair
   comes first. A singleton cluster offers its one member.
3. Picks and continuation form one queue: round 1 takes each cluster's pair, clusters in id
   order; every later round adds one member per cluster, by farthest point sampling inside the
   cluster (the member whose distance to its nearest already-queued cluster-mate is largest),
   until every slice is queued. The picks are the first B entries, so
   - for an odd budget the last cluster's pair is split: its first member is the B-th pick and
     its second opens the continuation;
   - singleton clusters leave round 1 short, and the next round fills the budget.

Ties go to the lowest slice index (for the pair: the first pair in row-major order). k-means
cannot form C clusters from fewer than C distinct rows (BudgetError).
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.distance import cdist

from sugfw.selection.base import Selection
from sugfw.selection.clustering import cluster_features
from sugfw.selection.inputs import check_inputs

_ROW_BLOCK = 1024  # rows of the pairwise-distance matrix held at once


def fps(features: np.ndarray, uncertainty: np.ndarray, budget: int, seed: int) -> Selection:
    """Two slices per k-means cluster (ceil(budget/2) clusters): its farthest-apart pair."""
    features, _, budget = check_inputs(features, uncertainty, budget, seed)
    clusters = cluster_features(features, (budget + 1) // 2, seed)
    position = np.empty(len(features), dtype=np.int64)
    for cluster in range(int(clusters.max()) + 1):
        members = np.flatnonzero(clusters == cluster)
        position[members[farthest_point_sequence(features[members])]] = np.arange(members.size)
    # Round 0 holds positions 0 and 1 (the pair); round r >= 1 holds position r + 1.
    round_ = np.maximum(position - 1, 0)
    order = np.lexsort((position, clusters, round_)).astype(np.int64)
    return Selection(order=order, clusters=clusters, n_selected=budget)


def farthest_point_sequence(points: np.ndarray) -> np.ndarray:
    """Row order: the farthest pair, then each row farthest from the rows already ordered."""
    m = len(points)
    if m == 1:
        return np.zeros(1, dtype=np.int64)
    first, second = _farthest_pair(points)
    sequence = [first, second]
    nearest = np.minimum(cdist(points[[first]], points)[0], cdist(points[[second]], points)[0])
    nearest[sequence] = -np.inf
    for _ in range(m - 2):
        chosen = int(np.argmax(nearest))
        sequence.append(chosen)
        np.minimum(nearest, cdist(points[[chosen]], points)[0], out=nearest)
        nearest[chosen] = -np.inf
    return np.asarray(sequence, dtype=np.int64)


def _farthest_pair(points: np.ndarray) -> tuple[int, int]:
    """(i, j), i < j, of maximal distance; the first such pair in row-major order."""
    m = len(points)
    best, best_pair = -np.inf, (0, 1)
    for start in range(0, m, _ROW_BLOCK):
        rows = np.arange(start, min(start + _ROW_BLOCK, m))
        distance = cdist(points[rows], points)
        distance[rows[:, None] >= np.arange(m)[None, :]] = -np.inf  # keep j > i only
        flat = int(np.argmax(distance))
        if distance.flat[flat] > best:  # strictly: an earlier block keeps its tie
            best = distance.flat[flat]
            best_pair = (int(rows[flat // m]), flat % m)
    return best_pair
