"""What the cluster-based strategies share: k-means on the features, stable cluster ids, and
the queue that takes every cluster's best member round by round.

Cluster ids are renumbered by each cluster's smallest member index, so a result depends only on
the partition (not on sklearn's label numbering, which follows the k-means++ draw).
"""

from __future__ import annotations

import numpy as np
from sklearn.cluster import KMeans, MiniBatchKMeans

from sugfw.selection.inputs import require_distinct_rows

KMEANS_N_INIT = 10
"""k-means restarts; the authors relied on sklearn's default, which was 10 before sklearn 1.4."""


MINI_BATCH_WORK = 2.5e9
"""N · C · D above which k-means runs on mini-batches: 10 full restarts at N = 100,000,
C = 1,000, D = 256 take tens of minutes on two cores; below it (every benchmark pool, projects
up to ~10,000 slices at C = 1 %) the selection is the exact one."""
MINI_BATCH_SIZE = 4096
MINI_BATCH_N_INIT = 3


def cluster_features(features: np.ndarray, n_clusters: int, seed: int) -> np.ndarray:
    """k-means labels of every row (k-means++, ``KMEANS_N_INIT`` restarts), renumbered.

    Pools whose N · C · D exceeds ``MINI_BATCH_WORK`` use mini-batch k-means instead
    (``benchmarks/bench_ranking.py`` measures its cost and how close its clusters come).
    """
    require_distinct_rows(features, n_clusters)
    n, dim = features.shape
    if n * n_clusters * dim <= MINI_BATCH_WORK:
        kmeans = KMeans(
            n_clusters=n_clusters, init="k-means++", n_init=KMEANS_N_INIT, random_state=seed
        )
    else:
        # Random initial centres: k-means++ seeding alone costs minutes at C = 1,000 (measured
        # 68 s for one seeding against 34 s for three random starts, with a lower objective).
        kmeans = MiniBatchKMeans(
            n_clusters=n_clusters,
            init="random",
            n_init=MINI_BATCH_N_INIT,
            batch_size=max(MINI_BATCH_SIZE, 4 * n_clusters),
            random_state=seed,
        )
    return renumber_by_first_member(kmeans.fit_predict(features))


def renumber_by_first_member(labels: np.ndarray) -> np.ndarray:
    """Relabel clusters 0, 1, ... in the order of their smallest member index."""
    _, first_member, inverse = np.unique(labels, return_index=True, return_inverse=True)
    new_id = np.empty(len(first_member), dtype=np.int64)
    new_id[np.argsort(first_member)] = np.arange(len(first_member))
    return new_id[inverse.ravel()]


def order_by_rank_in_cluster(clusters: np.ndarray, sort_key: np.ndarray) -> np.ndarray:
    """Queue of rounds: round r holds every cluster's r-th member by ascending ``sort_key``.

    Clusters are visited in id order within a round; ties in ``sort_key`` go to the lower index.
    """
    rank_in_cluster = np.empty(len(clusters), dtype=np.int64)
    for cluster in range(int(clusters.max()) + 1):
        members = np.flatnonzero(clusters == cluster)
        rank_in_cluster[members[np.argsort(sort_key[members], kind="stable")]] = np.arange(
            members.size
        )
    return np.lexsort((clusters, rank_in_cluster)).astype(np.int64)
