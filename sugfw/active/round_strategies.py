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

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np

from sugfw.active.unet_signals import UnetSignals
from sugfw.errors import InvalidInputError
from sugfw.registry import Registry
from sugfw.selection.clustering import cluster_features

RoundStrategy = Literal[
    "cold_start", "random", "entropy", "mutual_information", "entropy_diversity"
]


@dataclass(frozen=True)
class RoundStrategySpec:
    rank: Callable[[np.ndarray, UnetSignals | None, int, int], np.ndarray]
    """(cold-start rank as float64, the UNet's signals, budget, seed) -> queue, for N >= 1."""
    needs_unet: bool = False
    """The strategy reads a trained UNet's signals."""


def _cold_start(
    rank: np.ndarray, signals: UnetSignals | None, budget: int, seed: int
) -> np.ndarray:
    return np.argsort(rank, kind="stable")


def _random(rank: np.ndarray, signals: UnetSignals | None, budget: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).permutation(len(rank))


def _entropy(rank: np.ndarray, signals: UnetSignals, budget: int, seed: int) -> np.ndarray:
    return np.lexsort((rank, -signals.entropy))


def _mutual_information(
    rank: np.ndarray, signals: UnetSignals, budget: int, seed: int
) -> np.ndarray:
    return np.lexsort((rank, -signals.mutual_information))


def _entropy_diversity(
    rank: np.ndarray, signals: UnetSignals, budget: int, seed: int
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
    return np.lexsort((rank, -signals.entropy, order_in_cluster))


ROUND_STRATEGY_SPECS: Registry[RoundStrategySpec] = Registry(
    {
        "cold_start": RoundStrategySpec(_cold_start),
        "random": RoundStrategySpec(_random),
        "entropy": RoundStrategySpec(_entropy, needs_unet=True),
        "mutual_information": RoundStrategySpec(_mutual_information, needs_unet=True),
        "entropy_diversity": RoundStrategySpec(_entropy_diversity, needs_unet=True),
    },
    refusal="round strategy {name!r} is unknown: expected one of {choices}",
)
# Views of the registry under the names other modules import.
ROUND_STRATEGIES: tuple[str, ...] = tuple(ROUND_STRATEGY_SPECS)
NEEDS_UNET = frozenset(name for name, spec in ROUND_STRATEGY_SPECS.items() if spec.needs_unet)
assert ROUND_STRATEGIES == get_args(RoundStrategy), "RoundStrategy must list the registry"


def check_round_strategy(name: str) -> str:
    """``name`` when it is a registered round strategy; an InvalidInputError otherwise."""
    ROUND_STRATEGY_SPECS.lookup(name)
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
    spec = ROUND_STRATEGY_SPECS.lookup(strategy)
    rank = np.asarray(cold_start_rank, dtype=np.float64)
    n = len(rank)
    if spec.needs_unet:
        if signals is None:
            raise InvalidInputError(f"round strategy {strategy!r} needs a trained UNet's signals")
        if len(signals.entropy) != n:
            raise InvalidInputError(
                f"{len(signals.entropy)} UNet signals for {n} unlabelled slices"
            )
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    return spec.rank(rank, signals, budget, seed).astype(np.int64)
