"""Training loop: learning, schedule, determinism, resumption, warm start, multi-class labels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sugfw.errors import CheckpointError, InvalidInputError
from sugfw.metrics import foreground_dice
from sugfw.segmentation.augmentation import rot_flip
from sugfw.segmentation.infer import predict_volume
from sugfw.segmentation.train import (
    TrainConfig,
    _random_crop,
    load_trained_unet,
    poly_lr,
    train,
)
from sugfw.segmentation.unet import UNet

SIZE = 32


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def squares(n: int, seed: int, n_classes: int = 2) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Noisy slices with one square per foreground class: label c has intensity +1.5·(−1)^(c+1)."""
    rng = np.random.default_rng(seed)
    images, masks = [], []
    for _ in range(n):
        image = rng.normal(0, 1, (SIZE, SIZE)).astype(np.float32)
        mask = np.zeros((SIZE, SIZE), np.int64)
        for label in range(1, n_classes):
            side = int(rng.integers(6, 12))
            top, left = rng.integers(0, SIZE - side, 2)
            image[top : top + side, left : left + side] += 1.5 if label % 2 else -1.5
            mask[top : top + side, left : left + side] = label
        images.append(image)
        masks.append(mask)
    return images, masks


def config(**overrides) -> TrainConfig:
    fields = dict(iterations=40, batch_size=4, crop_size=SIZE, eval_every=10, seed=0, device="cpu")
    return TrainConfig(**{**fields, **overrides})


def slice_dice(val, n_classes=2):
    def evaluate(model):
        predictions = predict_volume(model, np.stack(val[0]), "cpu", batch_size=8)
        return float(
            np.mean([foreground_dice(p, m, n_classes) for p, m in zip(predictions, val[1])])
        )

    return evaluate


@pytest.fixture(scope="module")
def data():
    return squares(16, seed=0), squares(8, seed=1)


def test_training_lifts_validation_dice_from_untrained_level(data, tmp_path):
    (images, masks), val = data
    torch.manual_seed(0)
    untrained = slice_dice(val)(UNet().eval())
    result = train(images, masks, val, config(iterations=60), tmp_path, progress=False)
    assert untrained < 0.3  # measured ≈ 0.16: an untrained net marks nearly everything one class
    assert result.best_val_dice > 0.8  # measured ≈ 0.92 (seeds 0–2) after 60 iterations
    assert result.best_val_dice == max(h["val_dice"] for h in result.history)
    assert [h["iteration"] for h in result.history] == [10, 20, 30, 40, 50, 60]
    best = load_trained_unet(tmp_path / "best.pt")
    assert slice_dice(val)(best) == pytest.approx(result.best_val_dice)


def test_poly_decay_hand_values_and_schedule_in_history(data, tmp_path):
    # 0.01 · (1 − 50/100)^0.9 = 0.01 · 0.5^0.9 = 0.0053589
    assert poly_lr(0.01, 50, 100) == pytest.approx(0.0053589, rel=1e-4)
    (images, masks), val = data
    result = train(images, masks, slice_dice(val), config(iterations=15), tmp_path, progress=False)
    # Last step before each validation: iteration index 9 and 14 of 15.
    assert [h["iteration"] for h in result.history] == [10, 15]
    assert result.history[0]["lr"] == pytest.approx(0.01 * (1 - 9 / 15) ** 0.9)
    assert result.history[1]["lr"] == pytest.approx(0.01 * (1 - 14 / 15) ** 0.9)


def test_epoch_based_presets_derive_iterations():
    paper = TrainConfig.paper(100, device="cpu")  # 1000 epochs × ceil(100/8) = 1000 × 13
    authors = TrainConfig.authors_code(100, device="cpu")  # 400 epochs × ceil(100/16) = 400 × 7
    assert (paper.batch_size, paper.iterations) == (8, 13_000)
    assert (authors.batch_size, authors.iterations) == (16, 2_800)
    assert TrainConfig.authors_code(100, batch_size=10).iterations == 4_000  # 400 × 10


def _final_weights(directory):
    return torch.load(directory / "last.pt", weights_only=True)["model"]


def test_same_seed_gives_identical_weights_and_another_seed_does_not(data, tmp_path):
    (images, masks), val = data
    runs = {}
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        train(
            images,
            masks,
            slice_dice(val),
            config(iterations=12, seed=seed),
            tmp_path / name,
            progress=False,
        )
        runs[name] = _final_weights(tmp_path / name)
    assert all(torch.equal(runs["a"][k], runs["b"][k]) for k in runs["a"])
    assert not all(torch.equal(runs["a"][k], runs["c"][k]) for k in runs["a"])


def test_resuming_after_a_crash_equals_an_uninterrupted_run(data, tmp_path):
    (images, masks), val = data
    # Batch 3 over 16 slices: at iteration 20 the current epoch is part-way through (60 = 3·16 +
    # 12).
    run = config(batch_size=3)
    straight = train(images, masks, slice_dice(val), run, tmp_path / "straight", progress=False)

    calls = {"n": 0}

    def crashing(model):
        calls["n"] += 1
        if calls["n"] == 3:  # the validation at iteration 30, before last.pt is rewritten
            raise RuntimeError("simulated crash")
        return slice_dice(val)(model)

    with pytest.raises(RuntimeError, match="simulated crash"):
        train(images, masks, crashing, run, tmp_path / "resumed", progress=False)
    assert torch.load(tmp_path / "resumed" / "last.pt", weights_only=True)["iteration"] == 20

    resumed = train(images, masks, slice_dice(val), run, tmp_path / "resumed", progress=False)
    expected, actual = _final_weights(tmp_path / "straight"), _final_weights(tmp_path / "resumed")
    assert all(torch.equal(expected[k], actual[k]) for k in expected)
    assert resumed.history == straight.history
    assert resumed.best_val_dice == straight.best_val_dice


def test_resuming_with_another_config_is_refused(data, tmp_path):
    (images, masks), val = data
    train(images, masks, slice_dice(val), config(iterations=10), tmp_path, progress=False)
    with pytest.raises(CheckpointError, match="iterations: 10 -> 20"):
        train(images, masks, slice_dice(val), config(iterations=20), tmp_path, progress=False)
    with pytest.raises(CheckpointError, match="training slices: 16 -> 15"):
        train(
            images[:15],
            masks[:15],
            slice_dice(val),
            config(iterations=10),
            tmp_path,
            progress=False,
        )


def test_checkpoint_from_before_a_new_field_resumes_when_the_field_is_at_its_default(
    data, tmp_path
):
    (images, masks), val = data
    first = train(images, masks, slice_dice(val), config(iterations=10), tmp_path, progress=False)
    saved = torch.load(tmp_path / "last.pt", weights_only=False)
    for name in ("min_iterations", "patience"):  # as a checkpoint written before they existed
        del saved["config"][name]
    torch.save(saved, tmp_path / "last.pt")
    again = train(images, masks, slice_dice(val), config(iterations=10), tmp_path, progress=False)
    assert again.iterations == 10 and again.best_val_dice == first.best_val_dice
    with pytest.raises(CheckpointError, match="min_iterations: 0 -> 3"):
        train(
            images,
            masks,
            slice_dice(val),
            config(iterations=10, min_iterations=3),
            tmp_path,
            progress=False,
        )


def test_truncated_checkpoint_is_reported(data, tmp_path):
    (images, masks), val = data
    (tmp_path / "last.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="last.pt"):
        train(images, masks, slice_dice(val), config(iterations=10), tmp_path, progress=False)


def test_warm_start_begins_from_the_given_weights(data, tmp_path):
    (images, masks), val = data
    trained = train(images, masks, val, config(iterations=60), tmp_path / "first", progress=False)
    # A near-zero learning rate leaves the weights where they started for the first validation.
    frozen = config(iterations=5, eval_every=5, lr=1e-12)
    warm = train(
        images, masks, val, frozen, tmp_path / "warm", init_state=trained.best_state, progress=False
    )
    cold = train(images, masks, val, frozen, tmp_path / "cold", progress=False)
    assert warm.best_val_dice > 0.8 > 0.3 > cold.best_val_dice  # measured ≈ 0.91 and ≈ 0.12
    with pytest.raises(CheckpointError, match="n_classes=3"):
        train(
            images, masks, val, config(n_classes=3), tmp_path / "bad", init_state=trained.best_state
        )


def test_three_classes_train_and_are_all_predicted(tmp_path):
    (images, masks), val = squares(16, seed=0, n_classes=3), squares(8, seed=1, n_classes=3)
    result = train(images, masks, val, config(iterations=60, n_classes=3), tmp_path, progress=False)
    assert result.best_val_dice > 0.7  # measured ≈ 0.85–0.86 (seeds 0–2) after 60 iterations
    model = load_trained_unet(tmp_path / "best.pt")
    predicted = predict_volume(model, np.stack(val[0]), "cpu", batch_size=8)
    assert set(np.unique(predicted)) == {0, 1, 2}


def test_small_slices_are_padded_to_the_crop():
    image = np.arange(20 * 24, dtype=np.float32).reshape(20, 24) + 1
    mask = np.ones((20, 24), np.int64)
    cropped, cropped_mask = _random_crop(image, mask, SIZE, np.random.default_rng(0))
    # Padding 12 rows (6 + 6) and 8 columns (4 + 4) leaves a single 32 × 32 window.
    np.testing.assert_array_equal(cropped[6:26, 4:28], image)
    assert cropped.sum() == image.sum() and cropped_mask.sum() == mask.size


def test_rot_flip_reaches_all_eight_symmetries_and_moves_mask_with_image():
    image = np.array([[1, 2], [3, 4]])
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(200):
        out, out_mask = rot_flip(image, image * 10, rng)
        np.testing.assert_array_equal(out_mask, out * 10)
        seen.add(tuple(out.ravel()))
    assert len(seen) == 8


@pytest.mark.parametrize(
    "masks_of, message",
    [
        (lambda m: [x + 1 for x in m], "labels 1..2; expected 0..1"),
        (lambda m: [x[:, :-1] for x in m], "same shape"),
        (lambda m: [x.astype(np.float32) for x in m], "integer labels"),
        (lambda m: m[:-1], "as many masks as images"),
    ],
)
def test_bad_training_data_is_rejected(data, tmp_path, masks_of, message):
    (images, masks), val = data
    with pytest.raises(InvalidInputError, match=message):
        train(images, masks_of(masks), val, config(), tmp_path, progress=False)


def test_bad_config_is_rejected():
    with pytest.raises(InvalidInputError, match="iterations"):
        TrainConfig(iterations=0)
