"""ALPS (Yuan et al., EMNLP 2020) on slice features: the slice nearest each k-means centre.

1. k-means with k = budget: GSCU's ``cluster_features`` (``KMeans``, k-means++, 10 restarts,
   ``random_state=seed``, clusters renumbered by their smallest member). ALPS clusters its own
   surprisal embeddings; here, as in the SUGFW paper, the features are PGDR vectors.
2. Each cluster's centre is the mean of its members (the k-means centroid of the final
   partition), so the result depends only on the partition.
3. Pick: per cluster, in cluster-id order, the member nearest its centre (Euclidean). ALPS
   searches the whole pool for the point nearest each centre, which can return the same point
   for two centres; searching the cluster's own members keeps the picks distinct.
4. Continuation: further rounds over the clusters in id order, each adding its next-nearest
   member to its centre, until every slice is queued.

Ties go to the lowest slice index. k-means cannot form k clusters from fewer than k distinct
rows (BudgetError); should it leave a cluster empty, round 1 is short and round 2 fills the
budget.
"""

from __future__ import annotations

import numpy as np

from sugfw.selection.base import Selection
from sugfw.selection.clustering import cluster_features, order_by_rank_in_cluster
from sugfw.selection.inputs import check_inputs


def alps(features: np.ndarray, uncertainty: np.ndarray, budget: int, seed: int) -> Selection:
    """One slice per k-means cluster (k = budget): the one nearest the cluster's centre."""
    features, _, budget = check_inputs(features, uncertainty, budget, seed)
    clusters = cluster_features(features, budget, seed)
    distance = np.empty(len(features))
    for cluster in range(int(clusters.max()) + 1):
        members = np.flatnonzero(clusters == cluster)
        centre = features[members].mean(axis=0)
        distance[members] = np.linalg.norm(features[members] - centre, axis=1)
    order = order_by_rank_in_cluster(clusters, distance)  # nearest to the centre first
    return Selection(order=order, clusters=clusters, n_selected=budget)
