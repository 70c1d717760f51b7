"""CALR (Jin et al., Information Sciences 2022) on slice features: BIRCH clusters, densest member.

1. BIRCH into B = budget clusters: ``sklearn.cluster.Birch`` (branching factor 50) builds its
   CF-tree with threshold 0.5 (sklearn's default); its subcluster centroids are then merged into
   B clusters by agglomerative (Ward) clustering and every slice takes the label of its nearest
   subcluster. BIRCH cannot form B clusters from fewer than B subclusters, and the threshold is
   in feature units, so when the tree has fewer than B subclusters the threshold is halved until
   it has enough (in exact arithmetic it gets there once the threshold is below half the smallest
   distance between distinct rows; after 64 halvings it gives up with a BudgetError, as it does
   for fewer than B distinct rows). Clusters are renumbered
   by their smallest member. BIRCH is deterministic: the seed does not change the result.
2. Information density of a slice: its mean cosine similarity to the other members of its
   cluster (a singleton's density is undefined; it is its cluster's only choice).
3. Pick: per cluster, in id order, the member of maximal density.
4. Continuation: further rounds over the clusters in id order, each adding its member of next
   highest density (density stays the one computed over the whole cluster).

Ties go to the lowest slice index. All-zero feature rows have no direction and are rejected.
Should a BIRCH cluster end up with no slice (labels come from the nearest subcluster), round 1
is short and round 2 fills the budget.
"""

from __future__ import annotations

import numpy as np
from sklearn.cluster import Birch

from sugfw.errors import BudgetError
from sugfw.selection.base import Selection
from sugfw.selection.clustering import order_by_rank_in_cluster, renumber_by_first_member
from sugfw.selection.inputs import check_inputs, l2_normalised, require_distinct_rows

BIRCH_THRESHOLD = 0.5
"""Initial CF-tree radius threshold (sklearn's default), halved while too few subclusters form."""

MAX_THRESHOLD_HALVINGS = 64
"""BIRCH's radius arithmetic cancels for rows much closer than their norms; stop halving there."""


def calr(features: np.ndarray, uncertainty: np.ndarray, budget: int, seed: int) -> Selection:
    """One slice per BIRCH cluster (B = budget): the one most similar to its cluster-mates."""
    features, _, budget = check_inputs(features, uncertainty, budget, seed)
    unit = l2_normalised(features)
    clusters = birch_clusters(features, budget)
    density = np.empty(len(features))
    for cluster in range(int(clusters.max()) + 1):
        members = np.flatnonzero(clusters == cluster)
        density[members] = information_density(unit[members])
    order = order_by_rank_in_cluster(clusters, -density)  # densest first
    return Selection(order=order, clusters=clusters, n_selected=budget)


def birch_clusters(features: np.ndarray, n_clusters: int) -> np.ndarray:
    """BIRCH labels of every row in ``n_clusters`` groups, renumbered by smallest member."""
    require_distinct_rows(features, n_clusters)
    threshold = BIRCH_THRESHOLD
    for _ in range(MAX_THRESHOLD_HALVINGS + 1):
        birch = Birch(threshold=threshold, n_clusters=None, compute_labels=False).fit(features)
        if len(birch.subcluster_centers_) >= n_clusters:
            break
        threshold /= 2
    else:
        raise BudgetError(
            f"BIRCH found only {len(birch.subcluster_centers_)} subclusters for a budget of "
            f"{n_clusters}, even at threshold {threshold * 2:.3g}: the feature rows are too close "
            "to tell apart; lower the budget"
        )
    birch.set_params(n_clusters=n_clusters)
    birch.partial_fit()  # the global (agglomerative) step alone, on the existing tree
    return renumber_by_first_member(birch.predict(features))


def information_density(unit_members: np.ndarray) -> np.ndarray:
    """Mean cosine similarity of each unit row to the other rows (0 for a lone row)."""
    m = len(unit_members)
    if m == 1:
        return np.zeros(1)
    similarity = unit_members @ unit_members.T
    return (similarity.sum(axis=1) - np.diag(similarity)) / (m - 1)
