"""GSCU, greedy selection over clusters by uncertainty (paper Eq. 6-7), and its two ablations.

GSCU on features F (N, D), uncertainties u (N,) and a budget M:

1. k-means on F with C = M clusters: ``KMeans(n_clusters=M, init="k-means++", n_init=10,
   random_state=seed)`` on float64 copies of the features.
2. Cluster order. ``gscu`` (the default) visits the clusters in a seeded random order, as the
   authors' loop over sklearn's labels 0..C-1 effectively does (k-means++ numbers the clusters
   in the order of its random draw), but over a canonical list: clusters sorted by centroid,
   then ``numpy.random.default_rng(seed).permutation(C)``. Nothing depends on the order of the
   slices in the pool. ``gscu_index_order`` keeps the earlier rule: clusters renumbered by their
   smallest member index and visited 0..C-1, so the first cluster always holds pool slice 0.
3. First cluster: its member whose uncertainty is closest to the cluster's median uncertainty
   (``numpy.median``: the mean of the two middle values for an even count).
4. Each next cluster: its member maximising ``min |u - u_s|`` over every slice s selected so far.
5. Continuation to a full queue: after the M picks of round 1, further rounds apply rule 4 over the
   clusters in the same order; in each round every cluster with members left contributes one
   member, until every slice is queued. ``order[:M]`` is the paper's selection.

Ties (exact float64 equality of the rule's criterion, e.g. every slice with an empty union has
Û = 0.5 exactly): ``gscu`` takes the tied member nearest its cluster's centroid (squared
Euclidean in the clustered features), then the lowest index (only identical rows remain tied).
``gscu_index_order`` takes the lowest slice index, as ``argmin``/``argmax`` over the members in
index order do in the authors' code. ``Selection.clusters`` holds ids renumbered by smallest
member in both (ids are labels; the visiting order is separate).

``gscu_tie_aware`` (ours, label-free): ``gscu``, but slices at exactly Û = 0.5 (every view
agreed: nothing found or the same masks everywhere, so Eq. 7 gives them no signal and one such
pick makes every other one score 0) are deferred. Rounds first run over the untied members of
every cluster (the median of the first pick too), and only then over the tied ones, with the
same Eq. 7 bookkeeping.

``gscu_content_aware`` (ours, label-free, needs each slice's central brightness): ``gscu_tie_aware``
whose deferred set also holds the slices below the pool's lower third of central brightness
(``sugfw.content``: slices beyond the imaged structure, dark in the centre of the field of view).
Undeferred members of every cluster are queued first, then the deferred ones.

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

from sugfw.content import low_content
from sugfw.errors import InvalidInputError
from sugfw.selection.base import Selection
from sugfw.selection.clustering import cluster_features
from sugfw.selection.inputs import check_inputs

TIED_UNCERTAINTY = 0.5
"""Û of a slice on which every augmented view agreed (U = 0.5 everywhere under either sign)."""


def tied(uncertainty: np.ndarray) -> np.ndarray:
    """Which slices sit at Û = 0.5 (to float rounding of a mean of 0.5s)."""
    return np.abs(np.asarray(uncertainty, dtype=np.float64) - TIED_UNCERTAINTY) <= 1e-9


def tie_share(uncertainty: np.ndarray) -> float:
    """Share of slices at Û = 0.5: the degenerate, tied part of the pool."""
    values = np.asarray(uncertainty)
    return float(tied(values).mean()) if values.size else 0.0


def gscu(features: np.ndarray, uncertainty: np.ndarray, budget: int, seed: int) -> Selection:
    """GSCU (Eq. 6-7): one slice per k-means cluster, greedily spread over uncertainty; cluster
    order and ties independent of the order of the pool."""
    return _gscu_order_free(features, uncertainty, budget, seed, deferred=None)


def gscu_tie_aware(
    features: np.ndarray, uncertainty: np.ndarray, budget: int, seed: int
) -> Selection:
    """``gscu`` with the slices at Û = 0.5 queued after every other slice."""
    return _gscu_order_free(features, uncertainty, budget, seed, deferred=tied(uncertainty))


def gscu_content_aware(
    features: np.ndarray,
    uncertainty: np.ndarray,
    budget: int,
    seed: int,
    content: np.ndarray,
) -> Selection:
    """``gscu_tie_aware`` that also defers the pool's low-content slices (``sugfw.content``)."""
    features, uncertainty, budget = check_inputs(features, uncertainty, budget, seed)
    content = np.asarray(content, dtype=np.float64)
    if content.shape != (len(uncertainty),):
        raise InvalidInputError(
            f"content has shape {content.shape}; expected one value per slice ({len(uncertainty)},)"
        )
    deferred = tied(uncertainty) | low_content(content)
    return _gscu_order_free(features, uncertainty, budget, seed, deferred=deferred)


def gscu_index_order(
    features: np.ndarray, uncertainty: np.ndarray, budget: int, seed: int
) -> Selection:
    """GSCU with clusters visited by smallest member index and ties to the lowest index."""
    features, uncertainty, budget = check_inputs(features, uncertainty, budget, seed)
    clusters = cluster_features(features, budget, seed)
    choose = _greedy_uncertainty_chooser(uncertainty)
    order = _queue_by_rounds(_members_by_cluster(clusters), choose)
    return Selection(order=order, clusters=clusters, n_selected=budget)


def _gscu_order_free(
    features: np.ndarray,
    uncertainty: np.ndarray,
    budget: int,
    seed: int,
    deferred: np.ndarray | None,
) -> Selection:
    features, uncertainty, budget = check_inputs(features, uncertainty, budget, seed)
    clusters = cluster_features(features, budget, seed)
    members = _members_by_cluster(clusters)
    centroids = np.stack([features[m].mean(axis=0) for m in members])
    to_centroid = ((features - centroids[clusters]) ** 2).sum(axis=1)
    canonical = np.lexsort(centroids.T[::-1])  # by first coordinate, then the next ...
    visit = canonical[np.random.default_rng(seed).permutation(len(members))]
    members = [members[c] for c in visit]
    choose = _greedy_uncertainty_chooser(uncertainty, tie_key=to_centroid)
    if deferred is None:
        order = _queue_by_rounds(members, choose)
    else:
        first = _queue_by_rounds([m[~deferred[m]] for m in members], choose)
        order = np.concatenate([first, _queue_by_rounds([m[deferred[m]] for m in members], choose)])
    return Selection(order=order.astype(np.int64), clusters=clusters, n_selected=budget)


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


def _queue_by_rounds(members: list[np.ndarray], choose: Callable[[np.ndarray], int]) -> np.ndarray:
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
    """Eq. 7 bookkeeping: a slice's uncertainty distance to its nearest selected slice.

    Updating every slice's distance after each pick costs O(N) a pick, O(N²) for a full queue
    (hours at N = 100,000). In one dimension the nearest selected value is the next one below or
    above, so the selected values are kept sorted (``settled``, rebuilt every ``REBUILD`` picks)
    plus the few picked since (``recent``), and a query costs O(|candidates| · (log N + REBUILD)).
    The distances are the same floats: ``fl(|x − s|)`` is monotone in ``s`` on either side of
    ``x``, so its minimum over all selected ``s`` is attained at the neighbours found here.
    """

    REBUILD = 256

    def __init__(self, uncertainty: np.ndarray) -> None:
        self.uncertainty = np.asarray(uncertainty, dtype=np.float64)
        self.settled = np.empty(0)
        self.recent = np.empty(self.REBUILD)
        self.n_recent = 0

    def add(self, i: int) -> None:
        self.recent[self.n_recent] = self.uncertainty[i]
        self.n_recent += 1
        if self.n_recent == self.REBUILD:
            self.settled = np.sort(np.concatenate([self.settled, self.recent]))
            self.n_recent = 0

    def nearest_of(self, candidates: np.ndarray) -> np.ndarray:
        """Distance of each candidate to its nearest selected slice (inf before any pick)."""
        x = self.uncertainty[candidates]
        settled = self.settled
        if settled.size:
            above = settled.searchsorted(x)
            lower = settled[np.maximum(above - 1, 0)]
            upper = settled[np.minimum(above, settled.size - 1)]
            nearest = np.minimum(np.abs(x - lower), np.abs(x - upper))
        else:
            nearest = np.full(x.shape, np.inf)
        if self.n_recent:
            recent = self.recent[: self.n_recent]
            nearest = np.minimum(nearest, np.abs(x[:, None] - recent).min(axis=1))
        return nearest

    def farthest(self, candidates: np.ndarray) -> int:
        return int(candidates[np.argmax(self.nearest_of(candidates))])


def _first_best(candidates: np.ndarray, score: np.ndarray, tie_key: np.ndarray | None) -> int:
    """The candidate of highest ``score``; exact ties by lowest ``tie_key``, then lowest index."""
    best = candidates[score == score.max()]
    if tie_key is None or best.size == 1:
        return int(best[0])
    return int(best[np.argmin(tie_key[best])])


def _greedy_uncertainty_chooser(
    uncertainty: np.ndarray, tie_key: np.ndarray | None = None
) -> Callable[[np.ndarray], int]:
    spread = _MaxMinDistance(uncertainty)
    nothing_selected = True

    def choose(left: np.ndarray) -> int:
        nonlocal nothing_selected
        if nothing_selected:
            values = uncertainty[left]
            i = _first_best(left, -np.abs(values - np.median(values)), tie_key)
            nothing_selected = False
        else:
            i = _first_best(left, spread.nearest_of(left), tie_key)
        spread.add(i)
        return i

    return choose
