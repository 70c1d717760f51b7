"""UNet Monte-Carlo dropout signals and the round strategies that rank unlabelled slices."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sugfw.active import ROUND_STRATEGIES, UnetSignals, rank_unlabelled, unet_signals
from sugfw.active.unet_signals import pixel_entropy
from sugfw.errors import InvalidInputError
from sugfw.segmentation.unet import UNet


def test_pixel_entropy_hand_computed():
    p = torch.tensor([[0.5, 1.0], [0.5, 0.0]])[None, :, :, None]  # (1, C=2, H=2, W=1)
    np.testing.assert_allclose(pixel_entropy(p)[0, :, 0].numpy(), [math.log(2), 0.0], atol=1e-6)
    third = torch.full((1, 3, 1, 1), 1 / 3)
    assert pixel_entropy(third).item() == pytest.approx(math.log(3), abs=1e-6)


def _images(n: int = 3) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((n, 32, 32)).astype(np.float32)


def test_signals_are_seeded_and_mutual_information_vanishes_without_dropout():
    torch.manual_seed(0)
    model = UNet()
    first = unet_signals(model, _images(), passes=3, seed=5, batch_size=2)
    second = unet_signals(model, _images(), passes=3, seed=5, batch_size=2)
    np.testing.assert_array_equal(first.entropy, second.entropy)
    np.testing.assert_array_equal(first.features, second.features)
    assert first.features.shape == (3, 256)
    assert (first.mutual_information > 0).all()  # dropout passes disagree
    assert (first.entropy >= first.mutual_information).all()
    assert model.training  # mode restored
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    quiet = unet_signals(model, _images(), passes=3, seed=5)
    np.testing.assert_allclose(quiet.mutual_information, 0.0, atol=1e-6)
    np.testing.assert_allclose(quiet.entropy, first.entropy, rtol=0.5)  # same model, no noise


def test_signals_reject_bad_inputs():
    with pytest.raises(InvalidInputError, match="passes >= 2"):
        unet_signals(UNet(), _images(), passes=1)
    with pytest.raises(InvalidInputError, match="expected \\(N, H, W\\)"):
        unet_signals(UNet(), _images()[0])


def _signals(entropy, features=None, information=None):
    entropy = np.asarray(entropy, dtype=float)
    n = len(entropy)
    return UnetSignals(
        entropy=entropy,
        mutual_information=np.asarray(information if information is not None else entropy[::-1]),
        features=np.zeros((n, 2), np.float32) if features is None else np.asarray(features),
        foreground=np.zeros(n),
    )


def test_entropy_and_information_orders_with_ties_to_the_cold_start_rank():
    signals = _signals([0.1, 0.4, 0.4, 0.2], information=[0.3, 0.0, 0.1, 0.2])
    cold = np.array([3, 2, 1, 0])
    assert rank_unlabelled("entropy", cold, signals).tolist() == [2, 1, 3, 0]
    assert rank_unlabelled("mutual_information", cold, signals).tolist() == [0, 3, 2, 1]
    assert rank_unlabelled("cold_start", cold).tolist() == [3, 2, 1, 0]
    shuffled = rank_unlabelled("random", cold, seed=1)
    assert sorted(shuffled.tolist()) == [0, 1, 2, 3]
    assert shuffled.tolist() == rank_unlabelled("random", cold, seed=1).tolist()


def test_entropy_diversity_takes_the_most_uncertain_of_each_cluster_first():
    # Group A (slices 0-2) holds the three most uncertain slices; group B (3-5) the rest.
    features = np.array([[0, 0], [0, 1], [1, 0], [50, 50], [50, 51], [51, 50]], np.float32)
    entropy = [0.9, 0.8, 0.7, 0.3, 0.5, 0.1]
    signals = _signals(entropy, features)
    cold = np.arange(6)
    assert rank_unlabelled("entropy", cold, signals)[:2].tolist() == [0, 1]
    order = rank_unlabelled("entropy_diversity", cold, signals, budget=2, seed=0)
    assert order.tolist() == [0, 4, 1, 3, 2, 5]


def test_round_strategies_check_their_inputs():
    assert set(ROUND_STRATEGIES) >= {"cold_start", "entropy", "entropy_diversity"}
    with pytest.raises(InvalidInputError, match="unknown"):
        rank_unlabelled("nope", np.arange(3))
    with pytest.raises(InvalidInputError, match="needs a trained UNet"):
        rank_unlabelled("entropy", np.arange(3))
    with pytest.raises(InvalidInputError, match="2 UNet signals for 3"):
        rank_unlabelled("entropy", np.arange(3), _signals([0.1, 0.2]))
