from __future__ import annotations

import numpy as np
import pytest

from sugfw.errors import BudgetError, InvalidInputError
from sugfw.selection import (
    STRATEGIES,
    Selection,
    StrategySpec,
    get_strategy,
    gscu,
    gscu_index_order,
    gscu_tie_aware,
    gscu_without_clustering,
    gscu_without_greedy,
    resolve_budget,
    tie_share,
)


def _with_content(select):
    """A content-using strategy under the common signature: content = the first feature."""

    def bound(features, uncertainty, budget, seed):
        try:  # bad inputs must meet the common checks, not fail here
            content = np.linspace(0.0, 1.0, len(uncertainty))
        except TypeError:
            content = np.zeros(0)
        return select(features, uncertainty, budget, seed, content)

    bound.__name__ = select.__name__
    return bound


# Every registered strategy (GSCU, its ablations and the baselines) shares the input checks.
ALL_STRATEGIES = [
    _with_content(spec.select) if spec.uses_content else spec.select
    for spec in {id(spec.select): spec for spec in STRATEGIES.values()}.values()
]

# Eight slices in three far-apart groups, so k-means with C = 3 finds them for any seed.
# Group A near (0, 0): slices 0, 3, 5. Group B near (100, 0): slices 1, 4, 7.
# Group C near (0, 100): slices 2, 6. Renumbered by smallest member: A -> 0, B -> 1, C -> 2.
THREE_GROUPS = np.array(
    [[0, 0], [100, 0], [0, 100], [1, 0], [101, 0], [0, 1], [1, 100], [100, 1]], dtype=float
)
THREE_GROUP_IDS = np.array([0, 1, 2, 0, 1, 0, 2, 1])
THREE_GROUP_U = np.array([5, 6, 4, 1, 12, 9, 10, 3], dtype=float)


# ---------------------------------------------------------------- budget


@pytest.mark.parametrize(
    ("budget", "n", "expected"),
    [
        (0.005, 7040, 35),  # 35.2 -> 35
        (0.05, 50, 3),  # 2.5 -> 3 (half up; Python's round would give 2)
        (0.145, 100, 15),  # exactly 14.5 -> 15, though 0.145 * 100 == 14.499999999999998 in floats
        (0.01, 10, 1),  # 0.1 -> 0, raised to at least 1
        (0.15, 960, 144),  # 144.0
        (0.999, 10, 10),  # 9.99 -> 10
        (np.float64(0.5), 7, 4),  # 3.5 -> 4
        (1, 10, 1),
        (10, 10, 10),
        (np.int64(7), 10, 7),
    ],
)
def test_resolve_budget(budget, n, expected):
    result = resolve_budget(budget, n)
    assert result == expected
    assert type(result) is int


@pytest.mark.parametrize(
    ("budget", "n", "match"),
    [
        (11, 10, "budget 11 is out of range for n=10"),
        (0, 10, "budget 0 is out of range"),
        (-2, 10, "budget -2 is out of range"),
        (0.0, 10, "ratio 0.0 is out of range"),
        (-0.5, 10, "ratio -0.5 is out of range"),
        (1.0, 10, "ambiguous.*use the count"),
        (1.5, 10, "ratio 1.5 is out of range"),
        (5.0, 10, "ratio 5.0 is out of range"),
        (float("nan"), 10, "not finite"),
        (float("inf"), 10, "not finite"),
        (True, 10, "is a bool"),
        ("5", 10, "has type str"),
        (None, 10, "has type NoneType"),
        (1, 0, "n=0 is invalid"),
        (1, -3, "n=-3 is invalid"),
        (1, True, "n=True is invalid"),
        (1, 7.0, "n=7.0 is invalid"),
    ],
)
def test_resolve_budget_rejects(budget, n, match):
    with pytest.raises(BudgetError, match=match):
        resolve_budget(budget, n)


# ---------------------------------------------------------------- GSCU, hand-computed


def test_gscu_index_order_hand_computed_order_and_continuation():
    # u by slice: 0:5 1:6 2:4 3:1 4:12 5:9 6:10 7:3; clusters A={0,3,5} B={1,4,7} C={2,6}.
    # Round 1
    #   A (first): median{5,1,9} = 5; |u - 5| = 0 (s0), 4 (s3), 4 (s5) -> s0. Selected u {5}
    #   B: min dist to {5}: s1 |6-5|=1, s4 |12-5|=7, s7 |3-5|=2 -> s4. Selected {5,12}
    #   C: s2 min(|4-5|,|4-12|)=1, s6 min(|10-5|,|10-12|)=2 -> s6. Selected {5,12,10}
    # Round 2
    #   A: s3 min(4,11,9)=4, s5 min(4,3,1)=1 -> s3. Selected {5,12,10,1}
    #   B: s1 min(1,6,4,5)=1, s7 min(2,9,7,2)=2 -> s7. Selected {5,12,10,1,3}
    #   C: only s2 left -> s2
    # Round 3
    #   A: only s5 left -> s5;  B: only s1 left -> s1;  C: empty, skipped
    selection = gscu_index_order(THREE_GROUPS, THREE_GROUP_U, budget=3, seed=0)
    assert selection.order.tolist() == [0, 4, 6, 3, 7, 2, 5, 1]
    assert selection.picks.tolist() == [0, 4, 6]
    assert selection.n_selected == 3
    assert selection.clusters.tolist() == THREE_GROUP_IDS.tolist()


def test_gscu_index_order_depends_on_partition_not_on_sklearn_label_numbering():
    # Every seed finds the same three groups; renumbering by smallest member makes the
    # cluster ids and the visiting order, hence the whole Selection, identical.
    reference = gscu_index_order(THREE_GROUPS, THREE_GROUP_U, budget=3, seed=0)
    for seed in range(1, 8):
        other = gscu_index_order(THREE_GROUPS, THREE_GROUP_U, budget=3, seed=seed)
        np.testing.assert_array_equal(other.order, reference.order)
        np.testing.assert_array_equal(other.clusters, reference.clusters)


@pytest.mark.parametrize(
    "uncertainty",
    [
        # Middle values 3 (s3) and 5 (s1): numpy median 4, both at distance 1 -> lowest index s1.
        # A lower-median rule would pick s3.
        [9, 5, 1, 3],
        # Middle values 3 (s1) and 5 (s3): median 4, tie -> s1. An upper-median rule would pick s3.
        [9, 3, 1, 5],
    ],
)
def test_gscu_first_pick_uses_numpy_median_of_even_cluster(uncertainty):
    # budget 1 -> one cluster holding all four slices.
    # Continuation for [9,5,1,3]: selected {5}: s0 4, s2 4, s3 2 -> tie, s0;
    #   then {5,9}: s2 4, s3 2 -> s2; then s3.
    # Continuation for [9,3,1,5]: selected {3}: s0 6, s2 2, s3 2 -> s0;
    #   then {3,9}: s2 2, s3 2 -> tie, s2; then s3.
    features = np.arange(8, dtype=float).reshape(4, 2)
    selection = gscu_index_order(features, np.array(uncertainty, dtype=float), budget=1, seed=0)
    assert selection.order.tolist() == [1, 0, 2, 3]
    assert selection.clusters.tolist() == [0, 0, 0, 0]


def test_gscu_index_order_median_tie_goes_to_lowest_index():
    # u = [7, 5, 5]: median 5, s1 and s2 both at distance 0 -> s1; then {5}: s0 2, s2 0 -> s0.
    features = np.array([[0, 0], [1, 0], [0, 1]], dtype=float)
    selection = gscu_index_order(features, np.array([7.0, 5.0, 5.0]), budget=1, seed=0)
    assert selection.order.tolist() == [1, 0, 2]


@pytest.mark.parametrize("uncertainty", [[5.0, 2.0, 8.0], [5.0, 8.0, 2.0]])
def test_gscu_index_order_greedy_tie_goes_to_lowest_index(uncertainty):
    # Clusters {s0} and {s1, s2}. First pick s0 (u 5); s1 and s2 are both 3 away -> s1,
    # whichever of them has the larger uncertainty.
    features = np.array([[0, 0], [50, 0], [50, 1]], dtype=float)
    selection = gscu_index_order(features, np.array(uncertainty), budget=2, seed=0)
    assert selection.order.tolist() == [0, 1, 2]
    assert selection.clusters.tolist() == [0, 1, 1]


# ---------------------------------------------------------------- GSCU, properties on random data


def _random_pool(n: int = 40, dims: int = 5, seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, dims)), rng.uniform(0.5, 0.75, size=n)


def _assert_obeys_gscu_rule(selection: Selection, uncertainty: np.ndarray) -> None:
    """Replays the queue: clusters visited in rounds 0..C-1, Eq. 7 with lowest-index ties."""
    clusters, order = selection.clusters, selection.order.tolist()
    n_clusters = int(clusters.max()) + 1
    remaining = {c: sorted(np.flatnonzero(clusters == c).tolist()) for c in range(n_clusters)}
    selected: list[int] = []
    position = 0
    while position < len(order):
        for c in range(n_clusters):
            if not remaining[c]:
                continue
            chosen = order[position]
            assert clusters[chosen] == c, f"position {position}: expected a slice of cluster {c}"
            if not selected:
                target = np.median(uncertainty[remaining[c]])
                scores = [-abs(uncertainty[i] - target) for i in remaining[c]]
            else:
                scores = [
                    min(abs(uncertainty[i] - uncertainty[s]) for s in selected)
                    for i in remaining[c]
                ]
            best = remaining[c][scores.index(max(scores))]  # first maximum = lowest index
            assert chosen == best, f"position {position}: picked {chosen}, rule gives {best}"
            remaining[c].remove(chosen)
            selected.append(chosen)
            position += 1


@pytest.mark.parametrize("budget", [1, 4, 9, 40])
def test_gscu_index_order_queue_is_a_permutation_obeying_the_rule(budget):
    features, uncertainty = _random_pool()
    selection = gscu_index_order(features, uncertainty, budget=budget, seed=3)
    assert sorted(selection.order.tolist()) == list(range(40))
    assert selection.clusters.shape == (40,)
    assert set(selection.clusters.tolist()) == set(range(budget))
    # One pick per cluster, clusters in id order.
    assert selection.clusters[selection.picks].tolist() == list(range(budget))
    # Ids numbered by smallest member: first occurrences come in increasing slice order.
    _, first_member = np.unique(selection.clusters, return_index=True)
    assert np.all(np.diff(first_member) > 0)
    _assert_obeys_gscu_rule(selection, uncertainty)


def test_ranks_is_the_inverse_of_order():
    features, uncertainty = _random_pool()
    selection = gscu(features, uncertainty, budget=5, seed=1)
    ranks = selection.ranks()
    np.testing.assert_array_equal(ranks[selection.order], np.arange(40))
    np.testing.assert_array_equal(selection.order[ranks], np.arange(40))


@pytest.mark.parametrize("strategy", ALL_STRATEGIES)
def test_same_seed_gives_the_same_selection(strategy):
    features, uncertainty = _random_pool()
    first = strategy(features, uncertainty, 6, 11)
    second = strategy(features.copy(), uncertainty.copy(), 6, 11)
    np.testing.assert_array_equal(first.order, second.order)
    np.testing.assert_array_equal(first.clusters, second.clusters)
    assert first.n_selected == second.n_selected == 6


def test_gscu_accepts_duplicate_rows_when_enough_are_distinct():
    # Three distinct rows, each repeated: C = 3 is reachable; copies of a row share its cluster.
    features = np.repeat(np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]]), 3, axis=0)
    uncertainty = np.linspace(0.5, 0.75, 9)
    selection = gscu(features, uncertainty, budget=3, seed=0)
    assert selection.clusters.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert sorted(selection.order.tolist()) == list(range(9))


@pytest.mark.parametrize("strategy", [gscu, gscu_tie_aware, gscu_without_greedy])
def test_fewer_distinct_rows_than_clusters_is_a_budget_error(strategy):
    features = np.repeat(np.array([[0.0, 0.0], [10.0, 0.0]]), 3, axis=0)
    match = "budget needs 3 clusters.*only 2 distinct rows"
    with pytest.raises(BudgetError, match=match):
        strategy(features, np.linspace(0.5, 0.75, 6), 3, 0)


# ---------------------------------------------------------------- GSCU, independent of pool order


def test_gscu_hand_computed_seeded_cluster_order():
    # THREE_GROUPS centroids: A (1/3, 1/3), B (301/3, 1/3), C (1/2, 100). Sorted by centroid
    # (x, then y): A, C, B. The visit order is that list permuted by default_rng(seed).
    canonical = [0, 2, 1]
    for seed in (0, 1, 5):
        visit = [canonical[i] for i in np.random.default_rng(seed).permutation(3)]
        selection = gscu(THREE_GROUPS, THREE_GROUP_U, budget=3, seed=seed)
        assert selection.clusters[selection.picks].tolist() == visit
        # First cluster: the member nearest the median uncertainty of that cluster.
        first = np.flatnonzero(THREE_GROUP_IDS == visit[0])
        median = np.median(THREE_GROUP_U[first])
        expected = first[np.argmin(np.abs(THREE_GROUP_U[first] - median))]
        assert selection.picks[0] == expected


def test_gscu_first_cluster_is_not_pinned_to_slice_zero():
    # Over seeds the first visited cluster varies; the index-order variant always starts with
    # the cluster of slice 0.
    first = {
        int(
            gscu(THREE_GROUPS, THREE_GROUP_U, 3, seed).clusters[
                gscu(THREE_GROUPS, THREE_GROUP_U, 3, seed).picks[0]
            ]
        )
        for seed in range(12)
    }
    assert len(first) > 1
    pinned = {int(gscu_index_order(THREE_GROUPS, THREE_GROUP_U, 3, s).picks[0]) for s in range(12)}
    assert pinned == {0}


def test_gscu_median_tie_goes_to_the_member_nearest_the_centroid():
    # One cluster: rows (0,0), (1,0), (9,0); centroid (10/3, 0). u = [5, 7, 5]: median 5,
    # s0 and s2 tie at distance 0; s2 is 5.67 from the centroid, s0 3.33 -> s0.
    # Reversed rows: s0 = (9,0), s2 = (0,0) -> s2. Index order would take s0 both times.
    features = np.array([[0, 0], [1, 0], [9, 0]], dtype=float)
    u = np.array([5.0, 7.0, 5.0])
    assert gscu(features, u, 1, 0).picks.tolist() == [0]
    assert gscu(features[::-1].copy(), u, 1, 0).picks.tolist() == [2]
    assert gscu_index_order(features[::-1].copy(), u, 1, 0).picks.tolist() == [0]


def test_gscu_greedy_tie_goes_to_the_member_nearest_the_centroid():
    # Clusters {s0} and {s1, s2, s3}; centroid of the second (151/3, 4/3). With s0 (u 5) picked
    # first, s1 (u 2) and s3 (u 8) are both 3 away, s2 (u 5.5) 0.5: s1/s3 tie. Squared distances to
    # the centroid: s1 (50, 4) 65/9, s3 (50, 0) 17/9 -> s3. Index order takes s1.
    features = np.array([[0, 0], [50, 4], [51, 0], [50, 0]], dtype=float)
    u = np.array([5.0, 2.0, 5.5, 8.0])
    started_with_s0 = 0
    for seed in range(8):
        selection = gscu(features, u, 2, seed)
        if selection.picks[0] == 0:
            started_with_s0 += 1
            assert selection.picks.tolist() == [0, 3]
    assert started_with_s0 > 0
    assert gscu_index_order(features, u, 2, 0).picks.tolist() == [0, 1]


@pytest.mark.parametrize("strategy", [gscu, gscu_tie_aware])
@pytest.mark.parametrize("budget", [3, 6])
def test_gscu_order_is_invariant_to_a_permutation_of_the_pool(strategy, budget):
    # Six far-apart groups (k-means finds them whatever the row order), a third of the slices
    # tied at exactly 0.5: the permuted pool gives the same queue, up to relabelling.
    rng = np.random.default_rng(3)
    centres = np.array([[0, 0], [100, 0], [0, 100], [100, 100], [200, 0], [0, 200]], dtype=float)
    features = np.repeat(centres, 8, axis=0) + rng.normal(scale=1.0, size=(48, 2))
    u = rng.uniform(0.5, 0.75, size=48)
    u[rng.choice(48, 16, replace=False)] = 0.5
    if budget == 3:  # three clusters, each holding two groups
        features = np.repeat(centres[:3], 16, axis=0) + rng.normal(scale=1.0, size=(48, 2))
    reference = strategy(features, u, budget, 11)
    for trial in range(3):
        perm = np.random.default_rng(trial).permutation(48)  # new slice j = old slice perm[j]
        permuted = strategy(features[perm], u[perm], budget, 11)
        np.testing.assert_array_equal(perm[permuted.order], reference.order)
    # The index-order variant does depend on the file order here.
    index_order = gscu_index_order(features, u, budget, 11)
    moved = [
        perm[gscu_index_order(features[perm], u[perm], budget, 11).order]
        for perm in (np.random.default_rng(t).permutation(48) for t in range(3))
    ]
    assert any(not np.array_equal(m, index_order.order) for m in moved)


def test_tie_aware_gscu_queues_tied_slices_last():
    # Slices 0..3 tied at 0.5, 4..7 not; two groups. Every untied slice comes before any tied one.
    features = np.array(
        [[0, 0], [1, 0], [100, 0], [101, 0], [0, 1], [1, 1], [100, 1], [101, 1]], dtype=float
    )
    u = np.array([0.5, 0.5, 0.5, 0.5, 0.52, 0.6, 0.55, 0.7])
    selection = gscu_tie_aware(features, u, 2, 0)
    assert set(selection.order[:4].tolist()) == {4, 5, 6, 7}
    assert set(selection.order[4:].tolist()) == {0, 1, 2, 3}
    # Faithful GSCU: median of {0.5, 0.5, 0.52, 0.6} is 0.51 -> a tied slice can come first.
    assert tie_share(u) == 0.5
    assert tie_share(u[selection.picks]) == 0.0


# ---------------------------------------------------------------- ablations


def test_without_clustering_hand_computed():
    # u by slice: [9, 1, 5, 3, 7, 0, 8, 2, 6, 4]; N = 10, M = 3.
    # Sorted positions floor((2i+1)*10/6) = 1, 5, 8 -> values 1, 5, 8 -> slices 1, 2, 6.
    # Continuation, selected {1,5,8}: distances u0:1 u2:1 u3:2 u4:1 u6:1 u7:1 u9:1 -> u3 (slice 3).
    # Selected {1,3,5,8}: every remaining value is 1 away -> lowest slice, 0 (u 9).
    # After that every remaining value stays 1 away -> slices 4, 5, 7, 8, 9 in index order.
    uncertainty = np.array([9, 1, 5, 3, 7, 0, 8, 2, 6, 4], dtype=float)
    features = np.zeros((10, 3))  # ignored by this ablation, but still validated
    selection = gscu_without_clustering(features, uncertainty, budget=3, seed=0)
    assert selection.order.tolist() == [1, 2, 6, 3, 0, 4, 5, 7, 8, 9]
    assert selection.clusters.tolist() == [-1] * 10
    assert selection.n_selected == 3


def test_without_clustering_full_budget_is_the_stable_uncertainty_sort():
    # M = N: positions floor((2i+1)/2) = i, so all slices in sorted order; equal u keep index order.
    uncertainty = np.array([2.0, 1.0, 2.0, 0.0])
    selection = gscu_without_clustering(np.eye(4), uncertainty, budget=4, seed=0)
    assert selection.order.tolist() == [3, 1, 0, 2]


def test_without_greedy_singleton_clusters_follow_slice_order():
    # budget = N: each slice is its own cluster, numbered by slice; every draw has one choice.
    features = np.array([[0, 0], [10, 0], [0, 10], [10, 10]], dtype=float)
    selection = gscu_without_greedy(features, np.array([0.7, 0.6, 0.5, 0.55]), budget=4, seed=5)
    assert selection.order.tolist() == [0, 1, 2, 3]
    assert selection.clusters.tolist() == [0, 1, 2, 3]


def test_without_greedy_draws_one_random_member_per_cluster_per_round():
    round_one_picks_of_group_a = set()
    for seed in range(10):
        selection = gscu_without_greedy(THREE_GROUPS, THREE_GROUP_U, 3, seed)
        assert selection.clusters.tolist() == THREE_GROUP_IDS.tolist()
        # Rounds: clusters 0,1,2 | 0,1,2 | 0,1 (group C has only two members).
        assert selection.clusters[selection.order].tolist() == [0, 1, 2, 0, 1, 2, 0, 1]
        assert sorted(selection.order.tolist()) == list(range(8))
        round_one_picks_of_group_a.add(int(selection.order[0]))
    # The member is drawn, not fixed: over ten seeds group A's first pick varies.
    assert len(round_one_picks_of_group_a) > 1


# ---------------------------------------------------------------- bad inputs


GOOD_FEATURES = np.arange(1.0, 13.0).reshape(6, 2)  # no all-zero row: some strategies L2-normalise
GOOD_U = np.linspace(0.5, 0.75, 6)


@pytest.mark.parametrize("strategy", ALL_STRATEGIES)
@pytest.mark.parametrize(
    ("features", "uncertainty", "match"),
    [
        (np.arange(6.0), GOOD_U, r"features has shape \(6,\): expected a 2-D array"),
        (np.zeros((6, 2, 1)), GOOD_U, r"features has shape \(6, 2, 1\)"),
        (np.zeros((6, 0)), GOOD_U, r"features have shape \(6, 0\)"),
        (
            np.where(np.eye(6, 2) > 0, np.nan, 1.0),
            GOOD_U,
            r"features has 2 non-finite values \(first at index \(0, 0\)\)",
        ),
        (np.full((6, 2), np.inf), GOOD_U, "features has 12 non-finite"),
        (GOOD_FEATURES.astype(complex), GOOD_U, "features has dtype complex128"),
        (GOOD_FEATURES > 3, GOOD_U, "features has dtype bool"),
        (np.full((6, 2), "a"), GOOD_U, "features has dtype <U1"),
        ([[1.0, 2.0], [3.0]], GOOD_U, "features cannot be read as an array"),
        (GOOD_FEATURES, GOOD_U[:5], "uncertainty has 5 values but features have 6 rows"),
        (GOOD_FEATURES, GOOD_U.reshape(6, 1), r"uncertainty has shape \(6, 1\): expected a 1-D"),
        (
            GOOD_FEATURES,
            np.array([0.5, np.nan, 0.6, 0.6, 0.6, 0.6]),
            r"uncertainty has 1 non-finite values \(first at index \(1,\)\)",
        ),
    ],
)
def test_bad_arrays_raise_invalid_input(strategy, features, uncertainty, match):
    with pytest.raises(InvalidInputError, match=match):
        strategy(features, uncertainty, 2, 0)


@pytest.mark.parametrize("strategy", ALL_STRATEGIES)
@pytest.mark.parametrize(
    ("budget", "match"),
    [
        (0, "budget 0 is out of range for n=6"),
        (7, "budget 7 is out of range for n=6"),
        (0.5, "budget 0.5 is not an int count.*resolve_budget"),
        (np.float64(2.0), r"budget np.float64\(2.0\) is not an int count"),
        (True, "budget True is not an int count"),
    ],
)
def test_bad_budget_raises_budget_error(strategy, budget, match):
    with pytest.raises(BudgetError, match=match):
        strategy(GOOD_FEATURES, GOOD_U, budget, 0)


@pytest.mark.parametrize("strategy", ALL_STRATEGIES)
def test_empty_pool_raises_budget_error(strategy):
    with pytest.raises(BudgetError, match="n=0 is invalid"):
        strategy(np.zeros((0, 2)), np.zeros(0), 1, 0)


@pytest.mark.parametrize("strategy", ALL_STRATEGIES)
@pytest.mark.parametrize("seed", [-1, 2**32, 1.5, True, None])
def test_bad_seed_raises_invalid_input(strategy, seed):
    with pytest.raises(InvalidInputError, match=f"seed {seed!r} is invalid"):
        strategy(GOOD_FEATURES, GOOD_U, 2, seed)


# ---------------------------------------------------------------- registry


def test_registry_pairs_each_strategy_with_its_features():
    expected = {
        "gscu": (gscu, "pgdr"),
        "gscu_index_order": (gscu_index_order, "pgdr"),
        "gscu_tie_aware": (gscu_tie_aware, "pgdr"),
        "gscu_no_pgdr": (gscu, "mean"),
        "gscu_no_clustering": (gscu_without_clustering, "pgdr"),
        "gscu_no_greedy": (gscu_without_greedy, "pgdr"),
    }
    for name, (select, features) in expected.items():
        spec = get_strategy(name)
        assert spec.select is select
        assert spec.features == features
    assert set(expected) <= set(STRATEGIES)


def test_unknown_strategy_lists_the_known_names():
    with pytest.raises(
        InvalidInputError,
        match="'no_such_strategy' is unknown.*gscu, gscu_content_aware, gscu_index_order",
    ):
        get_strategy("no_such_strategy")


def test_strategy_spec_rejects_unknown_feature_kind():
    with pytest.raises(InvalidInputError, match="feature kind 'cls' is unknown"):
        StrategySpec(gscu, "cls")
