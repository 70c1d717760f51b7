from __future__ import annotations

import dataclasses
import itertools
import math

import pytest
import torch

from sugfw.augment import (
    IDENTITY,
    AugmentationParams,
    apply_intensity,
    apply_spatial,
    augment,
    invert_spatial,
    sample_augmentations,
)
from sugfw.errors import InvalidInputError

SPATIAL_COMBOS = list(itertools.product((None, 0, 1), range(4)))


def only(**changes: object) -> AugmentationParams:
    return dataclasses.replace(IDENTITY, **changes)


def t(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


def assert_values(actual: torch.Tensor, expected: list[list[float]]) -> None:
    torch.testing.assert_close(actual, t(expected), rtol=0, atol=1e-12)


RAMP = [[0.2, 0.4], [0.6, 0.8]]  # mean 0.5


# --- intensity ops, hand-computed ------------------------------------------------------------


def test_gamma() -> None:
    image = t([[0.25, 1.0], [0.0, 0.5]])
    # x ** 0.5: 0.25 -> 0.5, 1 -> 1, 0 -> 0, 0.5 -> sqrt(0.5)
    assert_values(apply_intensity(image, only(gamma=0.5)), [[0.5, 1.0], [0.0, math.sqrt(0.5)]])
    # x ** 1.5: 0.25 -> 0.125, 0.5 -> 0.5 * sqrt(0.5)
    assert_values(
        apply_intensity(image, only(gamma=1.5)), [[0.125, 1.0], [0.0, 0.5 * math.sqrt(0.5)]]
    )


def test_posterize() -> None:
    image = t([[0.5, 1.0], [0.1, 0.0]])
    # 4 bits, mask 0xF0: 0.5 -> floor(127.5)=127=0x7F -> 0x70=112; 1.0 -> 255 -> 240;
    # 0.1 -> floor(25.5)=25=0x19 -> 0x10=16; 0 -> 0
    assert_values(
        apply_intensity(image, only(posterize_bits=4)), [[112 / 255, 240 / 255], [16 / 255, 0.0]]
    )
    # 6 bits, mask 0xFC: 127 -> 124; 255 -> 252; 25 = 0b11001 -> 0b11000 = 24
    assert_values(
        apply_intensity(image, only(posterize_bits=6)), [[124 / 255, 252 / 255], [24 / 255, 0.0]]
    )


def test_posterize_8_bits_or_more_is_identity() -> None:
    image = t([[0.5, 0.123456789]])
    assert torch.equal(apply_intensity(image, only(posterize_bits=8)), image)
    assert torch.equal(apply_intensity(image, only(posterize_bits=9)), image)


def test_contrast_blends_with_mean_and_clips() -> None:
    # mean m = 0.5; m + 0.5 (x - m): 0.2 -> 0.35, 0.4 -> 0.45, 0.6 -> 0.55, 0.8 -> 0.65
    assert_values(apply_intensity(t(RAMP), only(contrast=0.5)), [[0.35, 0.45], [0.55, 0.65]])
    # m + 1.9 (x - m): 0.5 - 0.57 = -0.07 -> 0, 0.5 - 0.19 = 0.31, 0.69, 0.5 + 0.57 = 1.07 -> 1
    assert_values(apply_intensity(t(RAMP), only(contrast=1.9)), [[0.0, 0.31], [0.69, 1.0]])


def test_contrast_uses_each_images_own_mean_in_a_batch() -> None:
    batch = torch.stack([t(RAMP), t([[0.0, 0.0], [0.0, 0.4]])])
    # second image: m = 0.1; 0.1 + 0.5 (x - 0.1): 0 -> 0.05, 0.4 -> 0.25
    out = apply_intensity(batch, only(contrast=0.5))
    assert_values(out[0], [[0.35, 0.45], [0.55, 0.65]])
    assert_values(out[1], [[0.05, 0.05], [0.05, 0.25]])


def test_brightness_scales_and_clips() -> None:
    # 1.5 x: 0.3, 0.6, 0.9, 1.2 -> 1
    assert_values(apply_intensity(t(RAMP), only(brightness=1.5)), [[0.3, 0.6], [0.9, 1.0]])
    assert_values(apply_intensity(t(RAMP), only(brightness=0.1)), [[0.02, 0.04], [0.06, 0.08]])


def test_sharpness_changes_only_interior_pixels() -> None:
    image = t([[0.0, 0.0, 0.0], [0.0, 0.5, 0.0], [0.0, 0.0, 1.0]])
    # smoothed centre s = (neighbour sum 1.0 + 5 * 0.5) / 13 = 3.5/13; border pixels are kept.
    # f = 0.5: s + 0.5 (0.5 - s) = 3.5/13 + 0.5 * 3/13 = 5/13
    assert_values(
        apply_intensity(image, only(sharpness=0.5)),
        [[0.0, 0.0, 0.0], [0.0, 5 / 13, 0.0], [0.0, 0.0, 1.0]],
    )
    # f = 1.9: 3.5/13 + 1.9 * 3/13 = 9.2/13
    assert_values(
        apply_intensity(image, only(sharpness=1.9)),
        [[0.0, 0.0, 0.0], [0.0, 9.2 / 13, 0.0], [0.0, 0.0, 1.0]],
    )


def test_sharpness_on_all_border_image_is_identity() -> None:
    # a 2x2 image has no interior pixel, so the smoothed copy equals the image
    assert_values(apply_intensity(t(RAMP), only(sharpness=1.9)), RAMP)


def test_intensity_order_gamma_posterize_then_brightness() -> None:
    image = t([[0.25]])
    # gamma first: 0.25 ** 0.5 = 0.5, then brightness 0.5 -> 0.25
    # (brightness first would give sqrt(0.125) = 0.354)
    assert_values(apply_intensity(image, only(gamma=0.5, brightness=0.5)), [[0.25]])
    # gamma first: 0.5 -> posterize 4 bits -> 112/255
    # (posterize first: floor(63.75)=63 -> 48, sqrt(48/255) = 0.434)
    assert_values(apply_intensity(image, only(gamma=0.5, posterize_bits=4)), [[112 / 255]])


def test_identity_changes_nothing_and_does_not_alias() -> None:
    image = torch.rand(2, 5, 7, generator=torch.Generator().manual_seed(0))
    out = augment(image, IDENTITY)
    assert torch.equal(out, image)
    out[0, 0, 0] = 2.0
    assert image[0, 0, 0] <= 1.0


def test_input_is_not_modified() -> None:
    image = torch.rand(5, 7, generator=torch.Generator().manual_seed(1))
    before = image.clone()
    augment(image, AugmentationParams(0.5, 1, 1, 4, 1.9, 1.9, 1.9))
    assert torch.equal(image, before)


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_output_in_unit_range_and_keeps_dtype_device(device: str, dtype: torch.dtype) -> None:
    image = torch.rand(5, 7, generator=torch.Generator().manual_seed(2), dtype=dtype).to(device)
    extreme = AugmentationParams(0.1, None, 0, 4, 1.9, 1.9, 1.9)
    for p in [extreme, *sample_augmentations(30, seed=0)]:
        out = apply_intensity(image, p)
        assert out.dtype == dtype and out.device == image.device and out.shape == image.shape
        assert out.min() >= 0 and out.max() <= 1


def test_batched_intensity_matches_each_image() -> None:
    batch = torch.rand(3, 5, 7, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    for p in sample_augmentations(10, seed=4):
        expected = torch.stack([apply_intensity(img, p) for img in batch])
        torch.testing.assert_close(apply_intensity(batch, p), expected, rtol=0, atol=1e-12)


# --- spatial ops -----------------------------------------------------------------------------


def test_spatial_convention_by_hand() -> None:
    x = torch.tensor([[1, 2, 3], [4, 5, 6]])
    # flip axis 0 reverses rows; axis 1 reverses columns
    assert torch.equal(apply_spatial(x, only(flip_axis=0)), torch.tensor([[4, 5, 6], [1, 2, 3]]))
    assert torch.equal(apply_spatial(x, only(flip_axis=1)), torch.tensor([[3, 2, 1], [6, 5, 4]]))
    # one counter-clockwise turn: the last column (3, 6) becomes the first row
    assert torch.equal(apply_spatial(x, only(rot90=1)), torch.tensor([[3, 6], [2, 5], [1, 4]]))
    # flip rows first -> [[4,5,6],[1,2,3]], then turn: last column (6, 3) becomes the first row
    assert torch.equal(
        apply_spatial(x, only(flip_axis=0, rot90=1)), torch.tensor([[6, 3], [5, 2], [4, 1]])
    )


@pytest.mark.parametrize(("flip_axis", "rot90"), SPATIAL_COMBOS)
def test_invert_spatial_is_exact(flip_axis: int | None, rot90: int) -> None:
    p = only(flip_axis=flip_axis, rot90=rot90)
    generator = torch.Generator().manual_seed(5)
    for x in (torch.randn(5, 7, generator=generator), torch.randn(3, 5, 7, generator=generator)):
        forward = apply_spatial(x, p)
        expected_shape = x.shape[:-2] + ((7, 5) if rot90 % 2 else (5, 7))
        assert forward.shape == expected_shape
        assert torch.equal(invert_spatial(forward, p), x)


@pytest.mark.parametrize(("flip_axis", "rot90"), SPATIAL_COMBOS)
def test_stack_is_transformed_like_each_slice(flip_axis: int | None, rot90: int) -> None:
    p = only(flip_axis=flip_axis, rot90=rot90)
    stack = torch.randn(3, 5, 7, generator=torch.Generator().manual_seed(6))
    assert torch.equal(apply_spatial(stack, p), torch.stack([apply_spatial(s, p) for s in stack]))


def test_one_pixel_mask_lands_where_hand_computed() -> None:
    image = torch.zeros(5, 7, dtype=torch.float64)
    image[1, 2] = 1.0
    p = only(flip_axis=0, rot90=1)
    augmented = augment(image, p)
    # flip rows: (1, 2) -> (5-1-1, 2) = (3, 2); CCW turn of a 5x7: (r, c) -> (7-1-c, r) = (4, 3)
    assert augmented.shape == (7, 5)
    assert torch.nonzero(augmented).tolist() == [[4, 3]]


def test_masks_on_augmented_slices_map_back_to_the_right_pixel() -> None:
    image = torch.zeros(5, 7, dtype=torch.float64)
    image[1, 2] = 1.0  # interior, off-centre, on a non-square slice
    truth = image == 1.0
    spatial_only = [only(flip_axis=f, rot90=r) for f, r in SPATIAL_COMBOS]
    params = spatial_only + sample_augmentations(40, seed=7)
    restored = []
    for p in params:
        augmented = augment(image, p)
        mask = augmented == augmented.max()  # a stand-in segmenter that finds the bright pixel
        back = invert_spatial(mask, p)
        assert torch.equal(back, truth), p
        restored.append(back.double())
    # the mean mask over all K copies is exactly the one-pixel mask
    assert torch.equal(torch.stack(restored).mean(dim=0), truth.double())


def test_augment_swaps_height_and_width_on_an_odd_quarter_turn() -> None:
    image = torch.rand(5, 7, generator=torch.Generator().manual_seed(8))
    for p in sample_augmentations(12, seed=9):
        assert augment(image, p).shape == ((7, 5) if p.rot90 % 2 else (5, 7))


# --- sampling --------------------------------------------------------------------------------


def test_sampling_is_deterministic_and_seed_dependent() -> None:
    assert sample_augmentations(8, seed=3) == sample_augmentations(8, seed=3)
    assert sample_augmentations(8, seed=3) != sample_augmentations(8, seed=4)
    assert sample_augmentations(3, seed=3) == sample_augmentations(8, seed=3)[:3]


def test_sparse_law_uses_every_option() -> None:
    draws = sample_augmentations(2000, seed=0, law="sparse")
    assert {p.gamma for p in draws} == {1.0, 0.1, 0.5, 1.5, 1.9}
    assert {p.flip_axis for p in draws} == {None, 0, 1}
    assert {p.rot90 for p in draws} == {0, 1, 2, 3}
    assert {p.posterize_bits for p in draws} == {4, 5, 6, 7, 8}
    for name in ("contrast", "sharpness", "brightness"):
        assert {getattr(p, name) for p in draws} == {1.0, 0.1, 0.5, 1.5, 1.9}


def test_sparse_law_frequencies() -> None:
    draws = sample_augmentations(2000, seed=1, law="sparse")
    # gamma is off w.p. 0.5 (no choice equals 1.0): expect 0.5, sd sqrt(0.25/2000) ~ 0.011
    assert abs(sum(p.gamma == 1.0 for p in draws) / 2000 - 0.5) < 0.05
    # posterize is 8 bits w.p. 0.5 (off) + 0.5 * 1/5 (drew 8) = 0.6
    assert abs(sum(p.posterize_bits == 8 for p in draws) / 2000 - 0.6) < 0.05
    # flip uniform over 3 options
    assert abs(sum(p.flip_axis is None for p in draws) / 2000 - 1 / 3) < 0.05


def test_authors_law_applies_every_op_and_never_the_identity() -> None:
    draws = sample_augmentations(3000, seed=2)
    factors = {0.1, 0.5, 1.5, 1.9}
    for name in ("gamma", "contrast", "sharpness", "brightness"):
        values = [getattr(p, name) for p in draws]
        assert set(values) == factors, name  # every factor drawn, 1.0 never
    assert {p.flip_axis for p in draws} == {0, 1}
    assert {p.rot90 for p in draws} == {1, 2, 3}
    assert {p.posterize_bits for p in draws} == {4, 5, 6, 7, 8, 9}
    assert all(p != IDENTITY for p in draws)
    # Uniform draws: each rotation w.p. 1/3, each flip axis 1/2 (sd <= 0.0091 at n = 3000).
    assert abs(sum(p.rot90 == 2 for p in draws) / 3000 - 1 / 3) < 0.04
    assert abs(sum(p.flip_axis == 0 for p in draws) / 3000 - 1 / 2) < 0.04
    assert abs(sum(p.posterize_bits == 9 for p in draws) / 3000 - 1 / 6) < 0.04


def test_authors_law_changes_every_spatial_view() -> None:
    image = torch.arange(16, dtype=torch.float32).reshape(4, 4) / 15
    for p in sample_augmentations(50, seed=5):
        # A flip followed by a non-zero rotation is never the identity on a generic image.
        assert not torch.equal(apply_spatial(image, p), image)


def test_unknown_law_is_rejected() -> None:
    with pytest.raises(InvalidInputError, match="law="):
        sample_augmentations(2, seed=0, law="dense")  # type: ignore[arg-type]


@pytest.mark.parametrize("k", [0, -1, 2.5])
def test_sampling_rejects_bad_k(k: object) -> None:
    with pytest.raises(InvalidInputError, match="k="):
        sample_augmentations(k, seed=0)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        sample_augmentations(k, seed=0)  # type: ignore[arg-type]


# --- bad inputs ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "name"),
    [
        ({"gamma": 0.0}, "gamma"),
        ({"gamma": float("nan")}, "gamma"),
        ({"flip_axis": 2}, "flip_axis"),
        ({"rot90": 4}, "rot90"),
        ({"rot90": -1}, "rot90"),
        ({"posterize_bits": 0}, "posterize_bits"),
        ({"contrast": -0.1}, "contrast"),
        ({"sharpness": float("inf")}, "sharpness"),
        ({"brightness": -1.0}, "brightness"),
    ],
)
def test_params_reject_bad_values(changes: dict[str, object], name: str) -> None:
    with pytest.raises(InvalidInputError, match=name):
        only(**changes)


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (torch.zeros(7), "shape"),
        (torch.zeros(1, 2, 5, 7), "shape"),
        (torch.zeros(0, 7), "shape"),
        (torch.zeros(5, 7, dtype=torch.int64), "dtype"),
        (torch.full((5, 7), 1.5), r"\[0, 1\]"),
        (torch.full((5, 7), float("nan")), r"\[0, 1\]"),
    ],
)
def test_intensity_rejects_bad_images(image: torch.Tensor, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        apply_intensity(image, IDENTITY)


def test_bad_spatial_inputs() -> None:
    with pytest.raises(InvalidInputError, match="shape"):
        apply_spatial(torch.zeros(7), IDENTITY)
    with pytest.raises(InvalidInputError, match="shape"):
        invert_spatial(torch.zeros(7), IDENTITY)
    with pytest.raises(InvalidInputError, match="expected a torch.Tensor"):
        apply_intensity([[0.5]], IDENTITY)  # type: ignore[arg-type]
