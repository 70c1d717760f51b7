"""TypiClust (Hacohen et al., ICML 2022), and the simplified variant the SUGFW authors ran.

``typiclust`` follows the TypiClust authors (paper and official code), with no labelled set:
1. Features are L2-normalised (all-zero rows are rejected).
2. k-means into min(B, 500) clusters: ``KMeans`` (k-means++, 10 restarts) up to 50 clusters,
   ``MiniBatchKMeans`` (batch 5000, 3 restarts) above; ``random_state=seed``. The restart
   counts are sklearn's defaults of the time. Fewer distinct unit rows than clusters is a
   BudgetError.
3. Clusters with <= 5 members are dropped. If that drops every cluster (small pools), all are
   kept.
4. Clusters are visited by fewest labelled, then largest: with nothing labelled this is a cycle
   over the kept clusters by size, largest first (ties: the cluster holding the lowest slice
   index). A budget above the number of kept clusters goes round the cycle again.
5. In each visited cluster, the most typical member still unpicked. Typicality is
   1 / mean L2 distance to the member's K nearest unpicked cluster-mates, K = min(20, m // 2)
   with m the unpicked members of the cluster; the neighbours are searched within the cluster,
   as the official code does (the paper's formula does not say where). The official code gets
   its distances from ``faiss.IndexFlatL2``, which returns squared L2 distances; the paper's
   formula, used here, takes plain L2 distances. The 1e-5 the code adds to the mean only guards
   against division by zero: the most typical member is the one of least mean distance.
6. Continuation: the same cycle until the kept clusters are exhausted, then the same cycle over
   the dropped clusters (smallest last), so the queue covers every slice.

``typiclust_sugfw`` is the SUGFW authors' simplified variant: identical except that typicality
is 1 / mean L2 distance to all unpicked cluster-mates.

Ties go to the lowest slice index. ``Selection.clusters`` holds each slice's cluster numbered
by visiting order: 0 is the first cluster visited, dropped clusters come last.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.distance import cdist
from sklearn.cluster import KMeans, MiniBatchKMeans

from sugfw.selection.base import Selection
from sugfw.selection.clustering import KMEANS_N_INIT
from sugfw.selection.inputs import check_inputs, l2_normalised, require_distinct_rows

MAX_CLUSTERS = 500
MAX_FULL_KMEANS_CLUSTERS = 50
"""Above this many clusters, MiniBatchKMeans replaces KMeans."""
MINIBATCH_SIZE = 5000
MINIBATCH_N_INIT = 3
MIN_CLUSTER_SIZE = 5
"""Clusters with at most this many members are dropped."""
K_NEIGHBOURS = 20


def typiclust(features: np.ndarray, uncertainty: np.ndarray, budget: int, seed: int) -> Selection:
    """TypiClust as its authors define it: most typical member (K-NN density) per cluster."""
    return _typiclust(features, uncertainty, budget, seed, _NeighbourTypicality)


def typiclust_sugfw(
    features: np.ndarray, uncertainty: np.ndarray, budget: int, seed: int
) -> Selection:
    """The SUGFW authors' TypiClust: typicality from the mean distance to all cluster-mates."""
    return _typiclust(features, uncertainty, budget, seed, _ClusterTypicality)


def _typiclust(
    features: np.ndarray,
    uncertainty: np.ndarray,
    budget: int,
    seed: int,
    typicality: type[_NeighbourTypicality] | type[_ClusterTypicality],
) -> Selection:
    features, _, budget = check_inputs(features, uncertainty, budget, seed)
    unit = l2_normalised(features)
    labels = _kmeans_labels(unit, min(budget, MAX_CLUSTERS), seed)
    members = _clusters_in_visiting_order(labels)
    kept = [m for m in members if m.size > MIN_CLUSTER_SIZE]
    dropped = members[len(kept) :]  # the order is by size, so the small ones come last

    order: list[int] = []
    # With no cluster kept, the first phase is empty and the dropped ones are all there is.
    for phase in (kept, dropped):
        trackers = [(m, typicality(cdist(unit[m], unit[m]))) for m in phase]
        while trackers:
            for cluster_members, tracker in trackers:
                order.append(int(cluster_members[tracker.pop_most_typical()]))
            trackers = [(m, t) for m, t in trackers if t.n_left]

    clusters = np.empty(len(features), dtype=np.int64)
    for cluster_id, cluster_members in enumerate(members):
        clusters[cluster_members] = cluster_id
    return Selection(order=np.asarray(order, dtype=np.int64), clusters=clusters, n_selected=budget)


def _kmeans_labels(unit: np.ndarray, n_clusters: int, seed: int) -> np.ndarray:
    require_distinct_rows(unit, n_clusters)
    if n_clusters <= MAX_FULL_KMEANS_CLUSTERS:
        kmeans = KMeans(n_clusters=n_clusters, n_init=KMEANS_N_INIT, random_state=seed)
    else:
        kmeans = MiniBatchKMeans(
            n_clusters=n_clusters,
            batch_size=MINIBATCH_SIZE,
            n_init=MINIBATCH_N_INIT,
            random_state=seed,
        )
    return kmeans.fit_predict(unit)


def _clusters_in_visiting_order(labels: np.ndarray) -> list[np.ndarray]:
    """Member arrays, largest cluster first; equal sizes by lowest member index."""
    members = [np.flatnonzero(labels == label) for label in np.unique(labels)]
    return sorted(members, key=lambda m: (-m.size, int(m[0])))


class _NeighbourTypicality:
    """Mean distance of each unpicked member to its K nearest unpicked cluster-mates."""

    def __init__(self, distances: np.ndarray) -> None:
        self.distances = distances
        self.left = np.ones(len(distances), dtype=bool)
        self.mean = np.full(len(distances), np.inf)
        self.kth = np.full(len(distances), np.inf)  # distance to the K-th neighbour
        self.k = self._current_k()
        self._refresh(np.flatnonzero(self.left))

    @property
    def n_left(self) -> int:
        return int(self.left.sum())

    def pop_most_typical(self) -> int:
        chosen = int(np.argmin(self.mean))  # picked members hold inf
        self.left[chosen] = False
        self.mean[chosen] = np.inf
        k = self._current_k()
        if k != self.k:
            self.k = k
            self._refresh(np.flatnonzero(self.left))
        else:
            # Only members that had ``chosen`` among their K nearest see their mean change.
            affected = self.left & (self.distances[:, chosen] <= self.kth)
            self._refresh(np.flatnonzero(affected))
        return chosen

    def _current_k(self) -> int:
        return min(K_NEIGHBOURS, self.n_left // 2)

    def _refresh(self, rows: np.ndarray) -> None:
        if rows.size == 0:
            return
        if self.k == 0:  # a lone member: nothing to measure, and nothing to choose between
            self.mean[rows] = 0.0
            return
        columns = np.flatnonzero(self.left)
        to_others = self.distances[np.ix_(rows, columns)]
        to_others[rows[:, None] == columns[None, :]] = np.inf  # a member is not its own neighbour
        nearest = np.sort(np.partition(to_others, self.k - 1, axis=1)[:, : self.k], axis=1)
        self.mean[rows] = nearest.sum(axis=1) / self.k  # summed in sorted order: reproducible
        self.kth[rows] = nearest[:, -1]


class _ClusterTypicality:
    """Summed distance of each unpicked member to all unpicked cluster-mates.

    The sum ranks members exactly as the mean does: every member shares the divisor.
    """

    def __init__(self, distances: np.ndarray) -> None:
        self.distances = distances
        self.left = np.ones(len(distances), dtype=bool)
        self.total = distances.sum(axis=1)

    @property
    def n_left(self) -> int:
        return int(self.left.sum())

    def pop_most_typical(self) -> int:
        chosen = int(np.argmin(np.where(self.left, self.total, np.inf)))
        self.left[chosen] = False
        self.total -= self.distances[:, chosen]
        return chosen
