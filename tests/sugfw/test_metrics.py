from __future__ import annotations

import math

import monai.metrics as monai_hd
import numpy as np
import pytest
import torch
from medpy.metric import binary as medpy_binary
from scipy.ndimage import gaussian_filter

from sugfw.errors import InvalidInputError
from sugfw.metrics import (
    CaseMetrics,
    case_metrics,
    dice,
    field_of_view_diagonal,
    foreground_dice,
    hd95,
    mask_dice,
    summarise,
)

SPACING = (2.5, 0.625, 0.7)
SHAPE = (10, 40, 36)
SEEDS = (0, 1, 2, 3)


def blob_pair(seed: int, shape: tuple[int, int, int] = SHAPE) -> tuple[np.ndarray, np.ndarray]:
    """Two overlapping, irregular random masks (smoothed noise), one of them a noisier version."""
    rng = np.random.default_rng(seed)
    field = gaussian_filter(rng.standard_normal(shape), sigma=(1.0, 3.0, 3.0))
    truth = field > 0.02
    pred = (field + 0.03 * rng.standard_normal(shape)) > 0.0
    return pred, truth


def voxels(shape: tuple[int, int, int], *indices: tuple[int, int, int]) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    for index in indices:
        mask[index] = True
    return mask


# --- agreement with the reference libraries -------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
def test_dice_matches_medpy_exactly(seed: int) -> None:
    pred, truth = blob_pair(seed)
    assert 0.0 < dice(pred, truth) < 1.0
    assert dice(pred, truth) == medpy_binary.dc(pred, truth)


@pytest.mark.parametrize("seed", SEEDS)
def test_pooled_hd95_matches_medpy_with_anisotropic_spacing(seed: int) -> None:
    pred, truth = blob_pair(seed)
    expected = medpy_binary.hd95(pred, truth, voxelspacing=SPACING)
    assert expected > 0
    assert hd95(pred, truth, SPACING, "pooled") == pytest.approx(expected, rel=1e-12)


def test_pooled_hd95_matches_medpy_on_masks_touching_the_volume_border() -> None:
    rng = np.random.default_rng(7)
    # noise: most voxels are surface, many of them on the volume's border
    pred, truth = rng.random((2, 6, 12, 11)) > 0.5
    expected = medpy_binary.hd95(pred, truth, voxelspacing=SPACING)
    assert hd95(pred, truth, SPACING) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
def test_max_directed_hd95_matches_monai(seed: int) -> None:
    pred, truth = blob_pair(seed)
    expected = monai_hd.compute_hausdorff_distance(
        torch.from_numpy(pred)[None, None],
        torch.from_numpy(truth)[None, None],
        include_background=True,
        percentile=95,
        spacing=list(SPACING),
    ).item()
    # MONAI computes in float32
    assert hd95(pred, truth, SPACING, "max_directed") == pytest.approx(expected, rel=1e-5)


def test_definitions_differ_on_a_half_covered_line() -> None:
    # Truth: a 1-voxel-thick line of 20 voxels along axis 2 (spacing 0.7), so every voxel is
    # surface; the prediction covers its first 10 voxels.
    # pred -> truth: 10 zeros. truth -> pred: 10 zeros, then 1..10 voxels = (1..10) * 0.7 mm.
    # max_directed: 95th pct of the 20 truth->pred values, position 0.95 * 19 = 18.05 between
    #   sorted[18] = 9 and sorted[19] = 10 voxels -> 9.05 * 0.7 = 6.335 mm.
    # pooled: 30 values (20 zeros, 1..10), position 0.95 * 29 = 27.55 between sorted[27] = 8 and
    #   sorted[28] = 9 -> 8.55 * 0.7 = 5.985 mm.
    truth = np.zeros((3, 3, 24), dtype=bool)
    truth[1, 1, 2:22] = True
    pred = np.zeros_like(truth)
    pred[1, 1, 2:12] = True
    assert hd95(pred, truth, SPACING, "max_directed") == pytest.approx(6.335, rel=1e-12)
    assert hd95(pred, truth, SPACING, "pooled") == pytest.approx(5.985, rel=1e-12)
    assert hd95(pred, truth, SPACING, "pooled") == pytest.approx(
        medpy_binary.hd95(pred, truth, voxelspacing=SPACING), rel=1e-12
    )


# --- hand-made cases with exact answers --------------------------------------------------------


def test_single_voxels_a_known_distance_apart() -> None:
    # offset (2, 3, 1) voxels -> (5.0, 1.875, 0.7) mm; distance^2 = 25 + 3.515625 + 0.49 = 29.005625
    pred = voxels((5, 6, 4), (1, 1, 2))
    truth = voxels((5, 6, 4), (3, 4, 3))
    expected = math.sqrt(29.005625)
    assert hd95(pred, truth, SPACING, "pooled") == pytest.approx(expected, rel=1e-12)
    assert hd95(pred, truth, SPACING, "max_directed") == pytest.approx(expected, rel=1e-12)
    assert dice(pred, truth) == 0.0


@pytest.mark.parametrize(("axis", "expected_mm"), [(0, 2.5), (1, 0.625), (2, 0.7)])
def test_cube_shifted_by_one_voxel_is_one_spacing_away(axis: int, expected_mm: float) -> None:
    # 3x3x3 cube: 26 surface voxels and one centre. Shifted by one voxel along `axis`, per
    # direction: 16 surface voxels coincide with a partner surface voxel (0), the moved face's 9
    # voxels lie one spacing s from the other cube's face (s), and one face centre that falls on
    # the other cube's interior centre is min(spacing) = 0.625 from its ring. Pooled: 52 values,
    # 18 equal to s, so the 95th percentile (position 48.45 of 0..51) is s; each directed set
    # alike (position 23.75 of 0..25).
    truth = np.zeros((7, 7, 7), dtype=bool)
    truth[2:5, 2:5, 2:5] = True
    pred = np.roll(truth, 1, axis=axis)
    assert hd95(pred, truth, SPACING, "pooled") == pytest.approx(expected_mm, rel=1e-12)
    assert hd95(pred, truth, SPACING, "max_directed") == pytest.approx(expected_mm, rel=1e-12)
    # overlap 18 of 27 voxels: 2 * 18 / 54 = 2/3
    assert dice(pred, truth) == pytest.approx(2 / 3, rel=1e-15)


def test_identical_masks_score_perfectly() -> None:
    pred, _ = blob_pair(0)
    assert dice(pred, pred) == 1.0
    assert hd95(pred, pred, SPACING) == 0.0
    perfect = CaseMetrics(1.0, 0.0, "mm", "physical", pred_empty=False, truth_empty=False)
    assert case_metrics(pred, pred, SPACING) == perfect


def test_dice_accepts_zero_one_integer_masks_like_booleans() -> None:
    pred, truth = blob_pair(1)
    assert dice(pred.astype(np.uint8), truth.astype(np.float32)) == dice(pred, truth)


# --- empty-mask rules ---------------------------------------------------------------------------

EMPTY = np.zeros((4, 5, 6), dtype=bool)
ONE_VOXEL = voxels((4, 5, 6), (1, 2, 3))
# field of view (4 * 2.5, 5 * 0.625, 6 * 0.7) = (10, 3.125, 4.2) mm;
# diagonal^2 = 100 + 9.765625 + 17.64 = 127.405625
DIAGONAL_MM = math.sqrt(127.405625)


def test_dice_of_two_empty_masks_is_the_chosen_empty_value() -> None:
    assert dice(EMPTY, EMPTY) == 1.0
    assert dice(EMPTY, EMPTY, empty_value=0.0) == 0.0
    assert dice(EMPTY, ONE_VOXEL) == 0.0


def test_mask_dice_takes_slices_and_agrees_with_dice() -> None:
    pred, truth = blob_pair(0)
    assert mask_dice(pred, truth) == dice(pred, truth)
    assert mask_dice(pred[3], truth[3]) == dice(pred[3][None], truth[3][None])
    assert mask_dice(EMPTY[0], EMPTY[0]) == 1.0
    assert mask_dice(EMPTY[0], EMPTY[0], empty_value=0.0) == 0.0


def test_foreground_dice_averages_the_classes_and_counts_an_absent_class_as_one() -> None:
    truth = np.array([[0, 1, 1, 2]])
    pred = np.array([[0, 1, 0, 0]])
    # class 1: 2·1 / (1 + 2); class 2: 0; class 3 absent from both: 1
    assert foreground_dice(pred, truth, 4) == pytest.approx((2 / 3 + 0 + 1) / 3)


def test_physical_rule_both_empty_is_perfect() -> None:
    perfect = CaseMetrics(1.0, 0.0, "mm", "physical", pred_empty=True, truth_empty=True)
    assert case_metrics(EMPTY, EMPTY, SPACING) == perfect


@pytest.mark.parametrize(("pred", "truth"), [(EMPTY, ONE_VOXEL), (ONE_VOXEL, EMPTY)])
def test_physical_rule_one_empty_scores_the_field_of_view_diagonal(
    pred: np.ndarray, truth: np.ndarray
) -> None:
    result = case_metrics(pred, truth, SPACING)
    assert result.dice == 0.0
    assert result.hd95 == pytest.approx(DIAGONAL_MM, rel=1e-12)
    assert (result.pred_empty, result.truth_empty) == (not pred.any(), not truth.any())


def test_field_of_view_diagonal_exceeds_the_largest_real_hd95() -> None:
    # opposite corner voxels: (7.5, 2.5, 3.5) mm apart, sqrt(56.25 + 6.25 + 12.25) = sqrt(74.75)
    far_corners = voxels((4, 5, 6), (0, 0, 0)), voxels((4, 5, 6), (3, 4, 5))
    assert hd95(*far_corners, SPACING) == pytest.approx(math.sqrt(74.75), rel=1e-12)
    assert field_of_view_diagonal((4, 5, 6), SPACING) == pytest.approx(DIAGONAL_MM, rel=1e-12)
    assert math.sqrt(74.75) < DIAGONAL_MM


@pytest.mark.parametrize(
    ("pred", "truth"), [(EMPTY, ONE_VOXEL), (ONE_VOXEL, EMPTY), (EMPTY, EMPTY)]
)
def test_paper_rule_scores_every_empty_case_zero_zero(pred: np.ndarray, truth: np.ndarray) -> None:
    result = case_metrics(pred, truth, SPACING, rule="paper")
    assert (result.dice, result.hd95, result.hd95_unit) == (0.0, 0.0, "voxel")


def test_paper_rule_ignores_spacing_like_the_authors_medpy_call() -> None:
    # offset (2, 3, 1) voxels -> sqrt(4 + 9 + 1) = sqrt(14) voxels whatever the spacing
    pred = voxels((5, 6, 4), (1, 1, 2))
    truth = voxels((5, 6, 4), (3, 4, 3))
    assert case_metrics(pred, truth, SPACING, rule="paper").hd95 == pytest.approx(math.sqrt(14))
    blob_pred, blob_truth = blob_pair(2)
    paper = case_metrics(blob_pred, blob_truth, SPACING, rule="paper")
    assert paper.dice == medpy_binary.dc(blob_pred, blob_truth)
    assert paper.hd95 == pytest.approx(medpy_binary.hd95(blob_pred, blob_truth), rel=1e-12)


def test_physical_rule_with_both_masks_present_uses_the_chosen_definition() -> None:
    pred, truth = blob_pair(3)
    for definition in ("pooled", "max_directed"):
        result = case_metrics(pred, truth, SPACING, definition=definition)
        assert result.hd95 == hd95(pred, truth, SPACING, definition)
        assert result.dice == dice(pred, truth)


# --- summary ------------------------------------------------------------------------------------


def physical(dice_value: float, hd95_value: float) -> CaseMetrics:
    return CaseMetrics(dice_value, hd95_value, "mm", "physical", False, False)


def test_summarise_uses_population_std() -> None:
    # dice 0.5, 1, 0: mean 0.5, var = (0 + 0.25 + 0.25) / 3 = 1/6
    # hd95 2, 4, 9: mean 5, var = (9 + 1 + 16) / 3 = 26/3
    summary = summarise([physical(0.5, 2.0), physical(1.0, 4.0), physical(0.0, 9.0)])
    assert summary["cases"] == 3
    assert summary["dice_mean"] == pytest.approx(0.5)
    assert summary["dice_std"] == pytest.approx(math.sqrt(1 / 6))
    assert summary["hd95_mean"] == pytest.approx(5.0)
    assert summary["hd95_std"] == pytest.approx(math.sqrt(26 / 3))
    assert summary["hd95_unit"] == "mm"


def test_summarise_rejects_no_cases_and_mixed_units() -> None:
    with pytest.raises(InvalidInputError, match="empty"):
        summarise([])
    voxel_case = CaseMetrics(0.5, 2.0, "voxel", "paper", False, False)
    with pytest.raises(InvalidInputError, match="mixed units"):
        summarise([physical(0.5, 2.0), voxel_case])


# --- invalid inputs -----------------------------------------------------------------------------

CUBE = voxels((4, 5, 6), (1, 1, 1), (2, 2, 2))


@pytest.mark.parametrize(
    ("pred", "truth", "message"),
    [
        (CUBE, np.zeros((4, 5, 7), dtype=bool), "differs from truth shape"),
        (CUBE[0], CUBE[0], "expected a 3-D array"),
        (CUBE[None], CUBE[None], "expected a 3-D array"),
        (np.zeros((0, 5, 6), dtype=bool), np.zeros((0, 5, 6), dtype=bool), "zero-length"),
        (CUBE.astype(np.uint8) * 2, CUBE, "values \\[0, 2\\]"),
        (np.full((4, 5, 6), np.nan), CUBE, "prediction mask holds values"),
    ],
)
def test_bad_masks_raise(pred: np.ndarray, truth: np.ndarray, message: str) -> None:
    for call in (
        lambda: dice(pred, truth),
        lambda: hd95(pred, truth, SPACING),
        lambda: case_metrics(pred, truth, SPACING),
    ):
        with pytest.raises(InvalidInputError, match=message):
            call()


@pytest.mark.parametrize(
    ("spacing", "message"),
    [
        ((2.5, 0.625), "has 2 values; expected 3"),
        ((2.5, 0.625, 0.7, 1.0), "has 4 values; expected 3"),
        ((2.5, 0.0, 0.7), "finite and positive"),
        ((2.5, -0.625, 0.7), "finite and positive"),
        ((2.5, float("nan"), 0.7), "finite and positive"),
        ((2.5, float("inf"), 0.7), "finite and positive"),
        (("a", 1.0, 1.0), "not a sequence of numbers"),
    ],
)
def test_bad_spacing_raises(spacing: tuple, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        hd95(CUBE, CUBE, spacing)
    with pytest.raises(InvalidInputError, match=message):
        case_metrics(CUBE, CUBE, spacing)


def test_hd95_of_an_empty_mask_raises() -> None:
    with pytest.raises(InvalidInputError, match="empty prediction"):
        hd95(EMPTY, ONE_VOXEL, SPACING)
    with pytest.raises(InvalidInputError, match="empty truth"):
        hd95(ONE_VOXEL, EMPTY, SPACING)


def test_unknown_options_raise() -> None:
    with pytest.raises(InvalidInputError, match="unknown HD95 definition 'mean'"):
        hd95(CUBE, CUBE, SPACING, "mean")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="unknown HD95 definition 'mean'"):
        case_metrics(EMPTY, EMPTY, SPACING, definition="mean")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="unknown empty-mask rule 'lenient'"):
        case_metrics(CUBE, CUBE, SPACING, rule="lenient")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="pooled HD95"):
        case_metrics(CUBE, CUBE, SPACING, rule="paper", definition="max_directed")


def test_mask_iou_on_hand_computed_masks():
    from sugfw.metrics import mask_iou

    a = np.array([[1, 1, 0], [0, 0, 0]], dtype=bool)
    b = np.array([[0, 1, 1], [0, 0, 0]], dtype=bool)
    assert mask_iou(a, b) == pytest.approx(1 / 3)  # one shared pixel of three covered
    assert mask_iou(a, a) == 1.0
    assert mask_iou(np.zeros((2, 3), bool), np.zeros((2, 3), bool)) == 1.0
    assert mask_iou(a, np.zeros((2, 3), bool)) == 0.0
