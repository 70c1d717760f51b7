from __future__ import annotations

import importlib

import numpy as np
import pytest

from sugfw.errors import BudgetError, InvalidInputError
from sugfw.selection import (
    STRATEGIES,
    alps,
    calr,
    fps,
    get_strategy,
    probcover,
    random_selection,
    typiclust,
    typiclust_sugfw,
)
from sugfw.selection.probcover import largest_pure_radius

# The package exports a function of the same name, so fetch the module itself.
typiclust_module = importlib.import_module("sugfw.selection.typiclust")

BASELINES = [random_selection, probcover, fps, typiclust, typiclust_sugfw, calr, alps]
NORMALISING = [probcover, typiclust, typiclust_sugfw, calr]


def _on_circle(degrees: list[float], scale: list[float] | None = None) -> np.ndarray:
    angles = np.radians(degrees)
    points = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    return points if scale is None else points * np.asarray(scale)[:, None]


def _chord(degrees: float) -> float:
    """Distance between two unit vectors ``degrees`` apart: 2 sin(angle / 2)."""
    return 2 * np.sin(np.radians(degrees) / 2)


def _flat(n: int) -> np.ndarray:
    return np.full(n, 0.6)


# ---------------------------------------------------------------- random


def test_random_is_the_seeded_permutation():
    features = np.arange(1.0, 21.0).reshape(10, 2)
    selection = random_selection(features, _flat(10), 4, 9)
    np.testing.assert_array_equal(selection.order, np.random.default_rng(9).permutation(10))
    assert selection.clusters.tolist() == [-1] * 10
    other = random_selection(features, _flat(10), 4, 10)
    assert other.order.tolist() != selection.order.tolist()


# ---------------------------------------------------------------- ProbCover


def test_probcover_greedy_cover_with_known_delta():
    # Unit vectors at angles (deg) by slice: s0 180, s1 20, s2 90, s3 10, s4 0, s5 100, s6 30.
    # delta = 0.2 lies between chord(10 deg) = 0.174 and chord(20 deg) = 0.347, so a ball holds
    # the slice and its neighbours 10 deg away. Out-degrees (ball sizes):
    #   s0 {180}: 1   s1 {10,20,30}: 3   s2 {90,100}: 2   s3 {0,10,20}: 3
    #   s4 {0,10}: 2  s5 {90,100}: 2     s6 {20,30}: 2
    # 1. max 3: s1, s3 -> lowest index s1; covers 10, 20, 30 (s3, s1, s6).
    #    Uncovered left in each ball: s0 1, s2 2, s3 {0} 1, s4 {0} 1, s5 2, s6 0.
    # 2. max 2: s2, s5 -> s2; covers 90, 100 (s2, s5). Left: s0 1, s3 1, s4 1.
    # 3. max 1: s0 (lowest); covers 180.  4. max 1: s3 (covers 0 = s4), before s4.
    # All covered: s4, s5, s6 follow in seeded random order.
    features = _on_circle([180, 20, 90, 10, 0, 100, 30])
    selection = probcover(features, _flat(7), 3, 5, delta=0.2)
    assert selection.order[:4].tolist() == [1, 2, 0, 3]
    expected_tail = np.array([4, 5, 6])[np.random.default_rng(5).permutation(3)]
    assert selection.order[4:].tolist() == expected_tail.tolist()
    assert selection.picks.tolist() == [1, 2, 0]
    assert selection.clusters.tolist() == [-1] * 7


def test_probcover_covers_every_slice_beyond_a_row_block():
    # delta below every pairwise distance: each ball holds its slice alone, all degrees are 1,
    # so the greedy takes slices in index order. 1100 slices span more than one 1024-row block;
    # a builder that skipped the last partial block would leave slices 1024.. without edges.
    features = np.random.default_rng(0).normal(size=(1100, 3))
    selection = probcover(features, _flat(1100), 10, 0, delta=1e-9)
    assert selection.order.tolist() == list(range(1100))


# Two groups of unit vectors, pseudo-labels A = {0, 10, 20 deg}, B = {90, 100, 115 deg}.
# r_x = distance to the nearest slice of the other group:
#   0: chord 90 = 1.414   10: chord 80 = 1.286   20: chord 70 = 1.147
#   90: chord 70 = 1.147  100: chord 80 = 1.286  115: chord 95 = 1.475
# Sorted down: 1.475, 1.414, 1.286, 1.286, 1.147, 1.147.
PURITY_ANGLES = [100, 0, 115, 10, 90, 20]
PURITY_LABELS = np.array([1, 0, 1, 0, 1, 0])


@pytest.mark.parametrize(
    ("alpha", "expected"),
    [
        (0.95, _chord(70)),  # ceil(0.95 * 6) = 6 pure balls needed: the 6th largest r_x
        (1.0, _chord(70)),
        (0.5, _chord(80)),  # ceil(3) = 3: the 3rd largest r_x
        (0.35, _chord(80)),  # ceil(2.1) = 3
        (0.3, _chord(90)),  # ceil(1.8) = 2: the 2nd largest r_x
    ],
)
def test_largest_pure_radius(alpha, expected):
    unit = _on_circle(PURITY_ANGLES)
    assert largest_pure_radius(unit, PURITY_LABELS, alpha) == pytest.approx(expected, rel=1e-12)


def test_probcover_searched_delta_covers_each_group_with_one_ball():
    # budget 2 -> k-means finds the two groups; alpha 0.95 -> delta = chord(70): every ball
    # holds its whole group (within 25 deg < 70) and nothing else (>= 70 deg, not < delta).
    # All degrees are 3: s0 (100 deg) covers B, then s1 (0 deg), the lowest of A, covers A.
    selection = probcover(_on_circle(PURITY_ANGLES), _flat(6), 2, 3)
    assert selection.picks.tolist() == [0, 1]
    expected_tail = np.array([2, 3, 4, 5])[np.random.default_rng(3).permutation(4)]
    assert selection.order[2:].tolist() == expected_tail.tolist()


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"delta": 0.0}, "delta 0.0 is invalid: expected a finite ball radius > 0"),
        ({"delta": -1}, "delta -1 is invalid"),
        ({"delta": float("inf")}, "delta inf is invalid"),
        ({"delta": True}, "delta True is invalid"),
        ({"alpha": 0.0}, r"alpha 0.0 is invalid: expected a purity share in \(0, 1\]"),
        ({"alpha": 1.5}, "alpha 1.5 is invalid"),
        ({"n_pseudo_labels": 0}, r"n_pseudo_labels 0 is invalid: expected an int in \[1, 6\]"),
        ({"n_pseudo_labels": 7}, "n_pseudo_labels 7 is invalid"),
        ({"n_pseudo_labels": 2.0}, "n_pseudo_labels 2.0 is invalid"),
    ],
)
def test_probcover_rejects_bad_options(options, match):
    with pytest.raises(InvalidInputError, match=match):
        probcover(_on_circle(PURITY_ANGLES), _flat(6), 2, 0, **options)


# ---------------------------------------------------------------- TypiClust


def _lifted(points_2d: list[tuple[float, float]]) -> np.ndarray:
    """(x, y, 1000): after L2 normalisation, ~(x, y) / 1000 up to a relative 1e-4, so ranks of
    planar distances are kept wherever their margins exceed that."""
    points = np.asarray(points_2d, dtype=float)
    return np.column_stack([points, np.full(len(points), 1000.0)])


# One cluster (budget 1) of 11 slices: a unit square with its centre Q, and a row to the right.
DENSE_CORNER = _lifted(
    [
        (1, 0),  # s0
        (5, 0.5),  # s1
        (0, 0),  # s2
        (0.5, 0.5),  # s3 = Q
        (7, 0.5),  # s4
        (0, 1),  # s5
        (4, 0.5),  # s6
        (1, 1),  # s7
        (6, 0.5),  # s8
        (9, 0.5),  # s9
        (8, 0.5),  # s10
    ]
)


def test_typiclust_takes_the_member_of_densest_neighbourhood():
    # K = min(20, 11 // 2) = 5. Sum of distances to the 5 nearest:
    #   Q:      4 corners at 0.707 + (4,.5) at 3.5            = 2.83 + 3.5  = 6.33
    #   (1,0):  Q .707, (0,0) 1, (1,1) 1, (0,1) 1.414, (4,.5) 3.04 = 7.16
    #   (5,.5): 1, 1, 2, 2, 3 = 9;   (4,.5): 1, 2, 3, 4, (1,0) 3.04 = 13.04
    # Q (s3) has the least mean distance, so the greatest typicality.
    assert typiclust(DENSE_CORNER, _flat(11), 1, 0).picks.tolist() == [3]


def test_typiclust_sugfw_takes_the_member_nearest_all_others():
    # Sum of distances to all 10 others:
    #   (4,.5): row 1+2+3+4+5 = 15; square (1,*) 3.04 x2, (0,*) 4.03 x2, Q 3.5 -> 32.64
    #   (5,.5): row 1+1+2+3+4 = 11; square 4.03 x2, 5.02 x2, Q 4.5 -> 33.61
    #   Q:      row 3.5+4.5+...+8.5 = 36; corners 0.707 x4 -> 38.83
    # The simplified variant picks (4,.5) (s6), not the dense corner.
    assert typiclust_sugfw(DENSE_CORNER, _flat(11), 1, 0).picks.tolist() == [6]


def _three_directions(sizes: tuple[int, int, int]) -> np.ndarray:
    """Tight groups around e1, e2, e3 in 3-D, of the given sizes, slices interleaved."""
    rng = np.random.default_rng(1)
    rows = [
        np.eye(3)[axis] + rng.uniform(-0.01, 0.01, size=(size, 3))
        for axis, size in enumerate(sizes)
    ]
    features = np.concatenate(rows)
    return features[rng.permutation(len(features))]


@pytest.mark.parametrize("strategy", [typiclust, typiclust_sugfw])
def test_typiclust_visits_large_clusters_by_size_and_small_ones_last(strategy):
    # Groups of 8, 7 and 3 slices, budget 3 -> 3 clusters. The 3-slice cluster (<= 5) is
    # dropped; the cycle runs over the 8- then the 7-slice cluster (ids 0 and 1) until both are
    # exhausted (0,1 x7, then 0), then over the dropped one (id 2, three times).
    features = _three_directions((8, 7, 3))
    selection = strategy(features, _flat(18), 3, 0)
    expected = [0, 1] * 7 + [0] + [2] * 3
    assert selection.clusters[selection.order].tolist() == expected
    assert np.bincount(selection.clusters).tolist() == [8, 7, 3]
    assert selection.picks.size == 3


def test_typiclust_keeps_all_clusters_when_none_is_large_enough():
    # Groups of 4 and 3: both <= 5, so none is kept and the cycle runs over all of them.
    features = _three_directions((4, 3, 0))
    selection = typiclust(features, _flat(7), 2, 0)
    assert selection.clusters[selection.order].tolist() == [0, 1, 0, 1, 0, 1, 0]


def test_typiclust_caps_the_number_of_clusters(monkeypatch):
    # With the cap at 2, budget 5 gives 2 clusters (any 2 of the groups 8, 7, 6 merged: both
    # clusters keep > 5 slices), visited larger first, in a cycle: 0, 1, 0, 1, 0.
    monkeypatch.setattr(typiclust_module, "MAX_CLUSTERS", 2)
    selection = typiclust(_three_directions((8, 7, 6)), _flat(21), 5, 0)
    sizes = np.bincount(selection.clusters)
    assert sizes.size == 2 and sizes[0] >= sizes[1]
    assert selection.clusters[selection.picks].tolist() == [0, 1, 0, 1, 0]


# ---------------------------------------------------------------- ALPS


# Groups A, B, C far apart; k-means with k = 3 finds them. By slice:
#   s0 (4,0) A  s1 (100,0) B  s2 (0,100) C  s3 (0,0) A  s4 (103,0) B  s5 (1,1) A
#   s6 (101,0) B  s7 (0,4) A
# Ids by smallest member: A -> 0, B -> 1, C -> 2.
ALPS_POINTS = np.array(
    [[4, 0], [100, 0], [0, 100], [0, 0], [103, 0], [1, 1], [101, 0], [0, 4]], dtype=float
)


def test_alps_takes_the_member_nearest_each_centre():
    # A: centre (1.25, 1.25); distances s5 0.354, s3 1.768, s0 = s7 = sqrt(2.75^2 + 1.25^2)
    #    = 3.021 (tie -> s0 first) -> s5, s3, s0, s7.
    # B: centre (101.33, 0); s6 0.33, s1 1.33, s4 1.67 -> s6, s1, s4.   C: s2.
    # Rounds: (s5, s6, s2), (s3, s1), (s0, s4), (s7).
    selection = alps(ALPS_POINTS, _flat(8), 3, 0)
    assert selection.order.tolist() == [5, 6, 2, 3, 1, 0, 4, 7]
    assert selection.clusters.tolist() == [0, 1, 2, 0, 1, 0, 1, 0]


# ---------------------------------------------------------------- CALR


def test_calr_takes_the_member_most_similar_to_its_cluster():
    # Budget 1 -> one BIRCH cluster. Directions (deg) by slice: s0 150, s1 0, s2 60, s3 30,
    # lengths 1, 3, 2, 0.5 (cosine similarity ignores them). Pairwise cosines:
    #   0-30 .866  0-60 .5  0-150 -.866  30-60 .866  30-150 -.5  60-150 0
    # Mean over the other three: 60: (.5 + .866 + 0) / 3 = .455;  30: (.866 + .866 - .5) / 3
    #   = .411;  0: (.866 + .5 - .866) / 3 = .167;  150: (-.866 - .5 + 0) / 3 = -.455
    features = _on_circle([150, 0, 60, 30], scale=[1, 3, 2, 0.5])
    selection = calr(features, _flat(4), 1, 0)
    assert selection.order.tolist() == [2, 3, 1, 0]
    assert selection.clusters.tolist() == [0, 0, 0, 0]


def test_calr_lowers_the_birch_threshold_for_small_scale_features():
    # Two groups 1e-3 apart: at sklearn's threshold 0.5 BIRCH puts everything in one
    # subcluster and cannot make two clusters; halving the threshold separates the groups.
    features = 1e-3 * np.array(
        [[1, 0], [0, 1], [1.1, 0], [0, 1.1], [1.05, 0.02], [0.02, 1.05]], dtype=float
    )
    selection = calr(features, _flat(6), 2, 0)
    assert selection.clusters.tolist() == [0, 1, 0, 1, 0, 1]
    assert selection.clusters[selection.picks].tolist() == [0, 1]


# ---------------------------------------------------------------- FPS


# Groups A and B far apart. By slice: s0 (0,0) A  s1 (100,0) B  s2 (0,4) A  s3 (3,0) A
#   s4 (101,1) B  s5 (104,0) B  s6 (1,1) A.   Ids: A -> 0, B -> 1.
FPS_POINTS = np.array([[0, 0], [100, 0], [0, 4], [3, 0], [101, 1], [104, 0], [1, 1]], float)


@pytest.mark.parametrize("budget", [3, 4])
def test_fps_takes_the_farthest_pair_per_cluster(budget):
    # ceil(3/2) = ceil(4/2) = 2 clusters, so both budgets share one queue.
    # A: pairs (3,0)-(0,4) = 5 is the largest (others 4, 3, 3.16, 2.24, 1.41) -> s2, s3.
    #    Then farthest from {s2, s3}: s0 min(4, 3) = 3 beats s6 min(3.16, 2.24) -> s0, s6.
    # B: (100,0)-(104,0) = 4 beats 3.16 and 1.41 -> s1, s5; then s4.
    # Rounds: (s2, s3, s1, s5), (s0, s4), (s6). An odd budget of 3 ends after B's s1.
    selection = fps(FPS_POINTS, _flat(7), budget, 0)
    assert selection.order.tolist() == [2, 3, 1, 5, 0, 4, 6]
    assert selection.picks.tolist() == [2, 3, 1, 5][:budget]
    assert selection.clusters.tolist() == [0, 1, 0, 0, 1, 1, 0]


def test_fps_singleton_cluster_gives_one_and_the_next_round_fills_the_budget():
    # s0..s3 are group A of the test above ((0,0), (0,4), (3,0), (1,1)); s4 (100,100) is alone.
    # Round 1: A's pair s1, s2, then s4; the 4th pick is A's next, s0; then s3.
    features = np.array([[0, 0], [0, 4], [3, 0], [1, 1], [100, 100]], dtype=float)
    selection = fps(features, _flat(5), 4, 0)
    assert selection.order.tolist() == [1, 2, 4, 0, 3]
    assert selection.picks.tolist() == [1, 2, 4, 0]


# ---------------------------------------------------------------- every baseline


def _random_pool(n: int = 60, dims: int = 5, seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, dims)), rng.uniform(0.5, 0.75, size=n)


@pytest.mark.parametrize("strategy", BASELINES)
@pytest.mark.parametrize("budget", [1, 7, 51, 60])
def test_queue_is_a_permutation_with_budget_picks(strategy, budget):
    # 51 and 60 clusters take TypiClust's MiniBatchKMeans path.
    features, uncertainty = _random_pool()
    selection = strategy(features, uncertainty, budget, 2)
    assert sorted(selection.order.tolist()) == list(range(60))
    assert selection.order.dtype == np.int64
    assert selection.n_selected == budget
    assert selection.picks.size == budget
    assert selection.clusters.shape == (60,)
    assert selection.clusters.min() >= -1


@pytest.mark.parametrize(
    ("strategy", "budget"),
    [(alps, 3), (fps, 5), (typiclust, 3), (typiclust_sugfw, 3), (calr, 3), (probcover, 3)],
)
def test_fewer_distinct_rows_than_clusters_is_a_budget_error(strategy, budget):
    # Two distinct rows (also two distinct directions) cannot form 3 clusters
    # (FPS: budget 5 needs ceil(5/2) = 3).
    features = np.repeat(np.array([[1.0, 0.0], [0.0, 1.0]]), 3, axis=0)
    with pytest.raises(BudgetError, match="only 2 distinct rows"):
        strategy(features, _flat(6), budget, 0)


@pytest.mark.parametrize("strategy", NORMALISING)
def test_zero_feature_row_is_rejected_where_features_are_normalised(strategy):
    features = np.array([[1.0, 0.0], [0.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    with pytest.raises(InvalidInputError, match=r"1 all-zero rows \(first at slice 1\)"):
        strategy(features, _flat(4), 2, 0)


def test_registry_runs_every_baseline_on_pgdr_features():
    expected = {
        "random": random_selection,
        "probcover": probcover,
        "fps": fps,
        "typiclust": typiclust,
        "typiclust_sugfw": typiclust_sugfw,
        "calr": calr,
        "alps": alps,
    }
    for name, select in expected.items():
        spec = get_strategy(name)
        assert spec.select is select
        assert spec.features == "pgdr"
    assert set(expected) <= set(STRATEGIES)
