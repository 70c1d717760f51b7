"""The realistic protocol and the benchmark's fairness: per-case 3-D validation, one training seed,
balanced cell order, selection diagnostics, a separate test set."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from sugfw.experiment import CONFIGS, BenchConfig, plan_cells
from sugfw.experiment.runner import selection_diagnostics
from sugfw.segmentation.train import TrainConfig, _slice_dice_validator, case_dice_validator
from sugfw.selection import Selection


class ThresholdNet(nn.Module):
    """Predicts foreground wherever the input is positive."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([-x, x], dim=1)


def _case(foreground_predicted: bool) -> tuple[np.ndarray, np.ndarray]:
    labels = np.zeros((3, 6, 6), dtype=np.uint8)
    labels[1, 2:4, 2:4] = 1  # 4 voxels on the middle slice only
    images = labels.astype(np.float32) if foreground_predicted else np.zeros((3, 6, 6), np.float32)
    return images, labels


def test_case_dice_scores_an_empty_prediction_of_a_non_empty_case_zero() -> None:
    config = TrainConfig(iterations=1, batch_size=2, device="cpu")
    cases = [_case(True), _case(False)]
    # Case 1: prediction = truth -> 1. Case 2: nothing predicted, 4 true voxels -> 0. Mean 0.5.
    assert case_dice_validator(cases, config)(ThresholdNet()) == pytest.approx(0.5)
    # The per-slice mean scores the four empty/empty slices 1: (1 + 1 + 1 + 1 + 0 + 1) / 6.
    images = [s for images, _ in cases for s in images]
    labels = [s for _, labels in cases for s in labels]
    assert _slice_dice_validator(images, labels, config)(ThresholdNet()) == pytest.approx(5 / 6)


def test_case_dice_pools_voxels_across_slices() -> None:
    # Truth: 2 voxels on slice 1 and 2 on slice 2; prediction: the 2 on slice 1 and 4 false
    # voxels on slice 0.
    labels = np.zeros((3, 6, 6), dtype=np.uint8)
    labels[1, 2:3, 2:4] = 1
    labels[2, 2:3, 2:4] = 1
    images = np.zeros((3, 6, 6), np.float32)
    images[1, 2:3, 2:4] = 1
    images[0, 0:2, 0:2] = 1
    config = TrainConfig(iterations=1, batch_size=2, device="cpu")
    # |P| = 2 + 4 = 6, |T| = 4, |P ∩ T| = 2 -> 2 * 2 / 10 = 0.4.
    assert case_dice_validator([(images, labels)], config)(ThresholdNet()) == pytest.approx(0.4)


def test_every_cell_trains_with_the_same_seed_unless_asked_otherwise() -> None:
    config = CONFIGS["cpu_realistic"]
    seeds = {config.train_config(4, seed, "cpu").seed for seed in range(10)}
    assert seeds == {2025}
    paired = replace(config, train_seed=None)
    assert [paired.train_config(4, s, "cpu").seed for s in (3, 8)] == [3, 8]


def test_realistic_config_filters_nothing_by_label_and_has_enough_seeds() -> None:
    config = CONFIGS["cpu_realistic"]
    assert config.foreground_margin is None
    assert len(config.random_seeds) >= 10 and len(config.seeds) >= 5 and config.n_test >= 10
    assert {"random", "gscu", "gscu_content_aware"} <= set(config.strategies)


def test_cells_come_in_rounds_of_one_seed_per_strategy() -> None:
    config = BenchConfig(
        name="t",
        strategies=("random", "gscu"),
        budgets=(4, 8),
        seeds=(5, 6),
        random_seeds=(0, 1, 2),
        full_supervision=False,
    )
    keys = [(c.strategy, c.budget, c.seed) for c in plan_cells(config)]
    assert keys == [
        ("random", 4, 0),
        ("gscu", 4, 5),
        ("random", 4, 1),
        ("gscu", 4, 6),
        ("random", 4, 2),
        ("random", 8, 0),
        ("gscu", 8, 5),
        ("random", 8, 1),
        ("gscu", 8, 6),
        ("random", 8, 2),
    ]


def test_selection_diagnostics_use_labels_after_selection() -> None:
    labels = [np.zeros((2, 2), np.uint8) for _ in range(5)]
    labels[1][0, 0] = 1
    labels[3][1, 1] = 1
    u = np.array([0.5, 0.6, 0.5, 0.7, 0.55])
    selection = Selection(
        order=np.array([2, 1, 3, 0, 4]), clusters=np.array([0, 1, 1, 0, 1]), n_selected=3
    )
    diagnostics = selection_diagnostics(selection, u, labels)
    # Picks 2, 1, 3: foreground on 1 and 3 -> 2/3; the first pick (2) is empty; tied: slice 2.
    assert diagnostics == {
        "picks_foreground": pytest.approx(2 / 3),
        "first_pick_foreground": 0,
        "picks_tied": pytest.approx(1 / 3),
        "pool_tied": pytest.approx(2 / 5),
        "pool_foreground": pytest.approx(2 / 5),
        "cluster_sizes": "3;2",
    }


def test_bootstrap_difference_of_constant_cells_is_exact() -> None:
    from sugfw.experiment.report import bootstrap_difference

    strategy = np.full((5, 10), 0.8)
    reference = np.full((10, 10), 0.6)
    diff, low, high = bootstrap_difference(strategy, reference, n_boot=200)
    assert (diff, low, high) == pytest.approx((0.2, 0.2, 0.2))


def test_bootstrap_difference_is_paired_by_case() -> None:
    from sugfw.experiment.report import bootstrap_difference

    # Cases differ a lot (0.1 .. 0.9) but the strategy beats Random by exactly 0.05 on every case
    # and seed: a paired resampling of cases keeps every replicate at 0.05.
    cases = np.linspace(0.1, 0.9, 10)
    reference = np.tile(cases, (10, 1))
    diff, low, high = bootstrap_difference(reference[:5] + 0.05, reference, n_boot=300)
    assert (diff, low, high) == pytest.approx((0.05, 0.05, 0.05))


def test_bootstrap_interval_widens_with_seed_noise_and_covers_the_estimate() -> None:
    from sugfw.experiment.report import bootstrap_difference

    rng = np.random.default_rng(0)
    reference = 0.6 + rng.normal(scale=0.1, size=(10, 1)) + np.zeros((10, 12))
    strategy = 0.7 + rng.normal(scale=0.1, size=(5, 1)) + np.zeros((5, 12))
    diff, low, high = bootstrap_difference(strategy, reference, n_boot=500)
    assert diff == pytest.approx(strategy.mean() - reference.mean())
    assert low < diff < high and high - low > 0.05


def test_comparison_and_diagnostics_tables_from_rows() -> None:
    from sugfw.experiment.report import comparison_table, diagnostics_table

    rows = []
    for strategy, seeds, dice in (
        ("random", ("0", "1"), (0.5, 0.7)),
        ("gscu", ("0", "1"), (0.8, 0.8)),
    ):
        for seed, value in zip(seeds, dice):
            for case in ("c1", "c2"):
                rows.append(
                    {
                        "strategy": strategy,
                        "budget": "4",
                        "seed": seed,
                        "case_id": case,
                        "dice": str(value),
                        "picks_foreground": "0.5",
                        "first_pick_foreground": "1" if seed == "0" else "0",
                        "picks_tied": "0.25",
                        "pool_tied": "0.4",
                        "pool_foreground": "0.6",
                        "cluster_sizes": "3;1",
                    }
                )
    table = comparison_table(rows)
    # random: per-seed means 50, 70 -> 60 ± 14.14 (ddof 1); gscu 80 ± 0, +20 points.
    assert "| 4 slices | random | 2 | 2 | 60.00 ± 14.14 | – |" in table
    assert "| 4 slices | gscu | 2 | 2 | 80.00 ± 0.00 | +20.00 [" in table
    picked = diagnostics_table(rows)
    assert "| gscu | 4 slices | 2 | 50% | 50% | 25% | 40% | 60% | 3;1 |" in picked
