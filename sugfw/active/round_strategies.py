"""Round strategies: the order of the unlabelled slices after a training run.

Every strategy returns a full queue (each unlabelled slice once, first = label first):

- ``cold_start``: the cold-start order, unchanged (what the queue was before training).
- ``random``: a seeded permutation (the reference of the multi-round benchmark).
- ``entropy``: highest mean predictive entropy of the UNet first (Monte-Carlo dropout,
  ``sugfw.active.unet_signals``).
- ``mutual_information``: highest mean mutual information (BALD) first.
- ``entropy_diversity``: uncertainty and diversity together: k-means on the UNet's pooled
  bottleneck features with as many clusters as the round's budget; round r of the queue holds
  each cluster's r-th most uncertain member (entropy), ordered by entropy within the round. The
  first ``budget`` slices are the most uncertain slice of each kind of slice the network sees,
  rather than ``budget`` near-copies of one hard slice.

Ties go to the better cold-start rank, so the order never depends on the file order.
"""

from __future__ import annotations

from typing import Literal, get_args

import numpy as np

from sugfw.active.unet_signals import UnetSignals
from sugfw.errors import InvalidInputError
from sugfw.selection.clustering import cluster_features

RoundStrategy = Literal[
    "cold_start", "random", "entropy", "mutual_information", "entropy_diversity"
]
ROUND_STRATEGIES: tuple[str, ...] = get_args(RoundStrategy)
NEEDS_UNET = frozenset({"entropy", "mutual_information", "entropy_diversity"})


def check_round_strategy(name: str) -> str:
    if name not in ROUND_STRATEGIES:
        raise InvalidInputError(
            f"round strategy {name!r} is unknown: expected one of {', '.join(ROUND_STRATEGIES)}"
        )
    return name


def rank_unlabelled(
    strategy: str,
    cold_start_rank: np.ndarray,
    signals: UnetSignals | None = None,
    budget: int = 1,
    seed: int = 0,
) -> np.ndarray:
    """Queue (positions into the unlabelled slices) under ``strategy``.

    ``cold_start_rank`` (N,): each slice's cold-start queue position (any sortable numbers, lower
    first). ``signals``: the UNet's, needed by the UNet strategies. ``budget``: slices the round
    will label (sets ``entropy_diversity``'s cluster count).
    """
    check_round_strategy(strategy)
    rank = np.asarray(cold_start_rank, dtype=np.float64)
    n = len(rank)
    if strategy in NEEDS_UNET:
        if signals is None:
            raise InvalidInputError(f"round strategy {strategy!r} needs a trained UNet's signals")
        if len(signals.entropy) != n:
            raise InvalidInputError(
                f"{len(signals.entropy)} UNet signals for {n} unlabelled slices"
            )
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if strategy == "cold_start":
        return np.argsort(rank, kind="stable").astype(np.int64)
    if strategy == "random":
        return np.random.default_rng(seed).permutation(n).astype(np.int64)
    assert signals is not None
    if strategy == "entropy":
        return np.lexsort((rank, -signals.entropy)).astype(np.int64)
    if strategy == "mutual_information":
        return np.lexsort((rank, -signals.mutual_information)).astype(np.int64)
    return _entropy_diversity(signals, rank, budget, seed)


def _entropy_diversity(
    signals: UnetSignals, rank: np.ndarray, budget: int, seed: int
) -> np.ndarray:
    features = signals.features.astype(np.float64)
    n_clusters = max(1, min(int(budget), len(np.unique(features, axis=0))))
    clusters = (
        cluster_features(features, n_clusters, seed)
        if n_clusters > 1
        else np.zeros(len(rank), dtype=np.int64)
    )
    order_in_cluster = np.empty(len(rank), dtype=np.int64)
    for cluster in np.unique(clusters):
        members = np.flatnonzero(clusters == cluster)
        ranked = members[np.lexsort((rank[members], -signals.entropy[members]))]
        order_in_cluster[ranked] = np.arange(len(ranked))
    return np.lexsort((rank, -signals.entropy, order_in_cluster)).astype(np.int64)
