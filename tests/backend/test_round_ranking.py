"""The train job's re-ranking of unlabelled tasks by a round strategy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from backend.jobs.round_ranking import RoundRanker
from sugfw.active import unet_signals
from sugfw.errors import InvalidInputError
from sugfw.segmentation.unet import UNet


def _slices() -> dict[int, np.ndarray]:
    rng = np.random.default_rng(3)
    return {task_id: rng.standard_normal((32, 32)).astype(np.float32) for task_id in (11, 12, 13)}


def test_cold_start_keeps_the_cold_scores_and_runs_no_dropout():
    ranker = RoundRanker("cold_start", passes=4, seed=0)
    assert not ranker.needs_unet
    ranker.observe(11, UNet(), _slices()[11])
    assert ranker.scores({11: 0.5, 12: 0.0, 13: None}, budget=2) == {11: 0.5, 12: 0.0, 13: 1.0}


def test_entropy_orders_observed_tasks_by_the_unet_and_unseen_ones_last():
    torch.manual_seed(0)
    model = UNet()
    ranker = RoundRanker("entropy", passes=3, seed=1)
    slices = _slices()
    for task_id in (11, 12):
        ranker.observe(task_id, model, slices[task_id])
    entropy = {t: unet_signals(model, slices[t][None], 3, 1).entropy[0] for t in (11, 12)}
    first, second = sorted(entropy, key=entropy.get, reverse=True)
    scores = ranker.scores({11: 0.9, 12: 0.1, 13: 0.0}, budget=2)
    # Ranks 0, 1 for the observed tasks by entropy, rank 2 (score 2/3) for the unobserved one,
    # whatever its cold-start score.
    assert scores == {first: 0.0, second: pytest.approx(1 / 3), 13: pytest.approx(2 / 3)}


def test_with_nothing_observed_the_previous_order_stands():
    ranker = RoundRanker("entropy", passes=3, seed=1)
    assert ranker.scores({11: 0.9, 12: 0.1, 13: None}, budget=2) == {
        12: 0.0,
        11: pytest.approx(1 / 3),
        13: pytest.approx(2 / 3),
    }


def test_unknown_round_strategy_is_refused():
    with pytest.raises(InvalidInputError, match="round strategy"):
        RoundRanker("best_guess", passes=3, seed=0)
