"""Paired replicate statistics, sub-pools and the once-only count of identical training sets."""

from __future__ import annotations

import numpy as np
import pytest

from sugfw.experiment.configs import CONFIGS
from sugfw.experiment.paired import (
    mcnemar_exact,
    paired_difference,
    paired_table,
    replicate_matrix,
    t_interval,
)
from sugfw.experiment.runner import Cell, picks_key, plan_cells, subpool


def rows_of(arm: str, budget: str, table: dict[str, list[float]], keys=None) -> list[dict]:
    return [
        {
            "strategy": arm,
            "budget": budget,
            "seed": seed,
            "case_id": f"c{i}",
            "dice": str(value),
            "picks_key": (keys or {}).get(seed, f"{arm}-{seed}"),
        }
        for seed, values in table.items()
        for i, value in enumerate(values)
    ]


# Replicate differences by hand: r0 (0.6 − 0.5) = 0.10, r1 (0.3 − 0.2) = 0.10, r2 (0.05 − 0.6)
# = −0.55; mean −0.116667, s = 0.375278, s/√3 = 0.216667, t(0.975, 2) = 4.302653.
ARM = {"0": [0.5, 0.7], "1": [0.3, 0.3], "2": [0.05, 0.05]}
REFERENCE = {"0": [0.4, 0.6], "1": [0.3, 0.1], "2": [0.6, 0.6]}


def test_paired_difference_matches_the_hand_computed_t_interval():
    rows = rows_of("gscu", "4", ARM) + rows_of("random", "4", REFERENCE)
    result = paired_difference(rows, "gscu", "random", "4")
    assert result.n_replicates == 3
    assert result.mean == pytest.approx(-0.116667, abs=1e-6)
    assert result.t_low == pytest.approx(-0.116667 - 4.302653 * 0.216667, abs=1e-5)
    assert result.t_high == pytest.approx(-0.116667 + 4.302653 * 0.216667, abs=1e-5)
    assert result.boot_low <= result.mean <= result.boot_high
    # Replicate 2 of the arm collapsed (mean 0.05 < 0.10), none of the reference: one discordant
    # pair, p = 1.
    assert (result.collapsed_arm, result.collapsed_reference, result.mcnemar_p) == (1, 0, 1.0)
    assert "| 4 | gscu | 3 | -11.67 |" in paired_table(rows)


def test_t_interval_and_mcnemar_by_hand():
    low, high = t_interval([1.0, 3.0])  # mean 2, s = √2, s/√2 = 1, t(0.975, 1) = 12.7062
    assert (low, high) == pytest.approx((2 - 12.7062, 2 + 12.7062), abs=1e-4)
    assert np.isnan(t_interval([1.0])[0])
    # Six replicates where only the reference collapsed: p = 2 · 0.5⁶ = 0.03125.
    assert mcnemar_exact(np.zeros(6, bool), np.ones(6, bool)) == pytest.approx(0.03125)
    assert mcnemar_exact(np.ones(4, bool), np.ones(4, bool)) == 1.0


def test_arms_sharing_a_cold_start_give_exactly_zero():
    rows = rows_of("gscu", "4", REFERENCE) + rows_of("random", "4", REFERENCE)
    result = paired_difference(rows, "gscu", "random", "4")
    assert (result.mean, result.t_low, result.t_high) == (0.0, 0.0, 0.0)
    assert (result.boot_low, result.boot_high) == (0.0, 0.0)


def test_identical_training_sets_are_counted_once():
    keys = {"0": "same", "1": "same", "2": "other"}
    rows = rows_of("gscu", "4", ARM, keys) + rows_of("random", "4", REFERENCE)
    assert sorted(replicate_matrix(rows, "gscu", "4")) == ["0", "2"]
    assert paired_difference(rows, "gscu", "random", "4").n_replicates == 2


def test_picks_key_ignores_order_and_depends_on_the_training_seed():
    assert picks_key(0, ["b", "a"]) == picks_key(0, ["a", "b"])
    assert picks_key(1, ["a", "b"]) != picks_key(0, ["a", "b"])


def test_subpool_is_a_function_of_the_seed_alone():
    case_ids = [f"case{c}" for c in range(10) for _ in range(8)]
    first = subpool(case_ids, 5, 3)
    np.random.seed(99)  # global numpy state is not used
    assert np.array_equal(subpool(case_ids, 5, 3), first)
    assert len({case_ids[i] for i in first}) == 5 and len(first) == 40
    assert np.all(np.diff(first) > 0)  # pool order kept
    assert any(not np.array_equal(subpool(case_ids, 5, s), first) for s in range(4, 8))
    assert np.array_equal(subpool(case_ids, None, 3), np.arange(80))


def test_replicate_config_pairs_arms_and_gives_each_replicate_its_full_supervision():
    config = CONFIGS["cpu_replicates"]
    assert config.seeds == config.random_seeds and config.train_seed is None
    cells = plan_cells(config)
    full = [c for c in cells if c.strategy == "full_supervision"]
    assert [c.seed for c in full] == list(config.seeds)
    assert Cell("alps", 4, 0) in cells and Cell("random", 4, 0) in cells
    assert config.train_config(4, seed=3, device="cpu").seed == 3
    assert config.train_config(4, seed=3, device="cpu").norm == "instance"
