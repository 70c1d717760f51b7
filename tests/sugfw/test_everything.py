"""Everything mode (Eq. 2) with a stub model whose masks and predicted IoUs are designed by hand."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from segment_anything.utils.amg import build_point_grid
from torch import nn

from sugfw.everything import EverythingResult, everything_union, logits_to_slice
from sugfw.models.base import CanvasGeometry, EverythingSettings, SegmenterModel, _starts

SIZE = 12  # canvas = low-res logits = slice side, so logits_to_slice is the identity
GEOMETRY = CanvasGeometry(height=SIZE, width=SIZE, canvas=SIZE, scale=1.0)
INSIDE, OUTSIDE = 10.0, -10.0  # far from the ±1 stability thresholds: stability 1


class GridModel(SegmenterModel):
    """Concrete model with no network: enough for the base class's prompt grid."""

    name = "stub"
    canvas_size = SIZE
    defaults = EverythingSettings(
        prompt_kind="points",
        grid=(1,),
        pred_iou_thresh=0.0,
        stability_thresh=0.0,
        max_area_fraction=1.0,
        box_nms_thresh=1.0,
        multimask=False,
    )

    def __init__(self) -> None:
        super().__init__(nn.Identity(), torch.device("cpu"), "stub")

    def normalise(self, canvas: torch.Tensor) -> torch.Tensor:
        return canvas


class DesignedModel(GridModel):
    """Prompt i decodes to the i-th designed (logits, predicted IoU) pair, one mask per prompt."""

    def __init__(self, designs: list[tuple[torch.Tensor, float]]) -> None:
        super().__init__()
        self.logits = torch.stack([logits for logits, _ in designs])
        self.ious = torch.tensor([iou for _, iou in designs])

    def prompt_grid(
        self, geometry: CanvasGeometry, grid: tuple[int, ...], kind: str
    ) -> torch.Tensor:
        index = torch.arange(len(self.ious), dtype=torch.float32)
        return torch.stack([index, torch.zeros_like(index)], dim=1)

    def decode(
        self, embedding: torch.Tensor, prompts: torch.Tensor, multimask: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        index = prompts[:, 0].long()
        return self.logits[index][:, None], self.ious[index][:, None]


def block(rows: slice, cols: slice) -> torch.Tensor:
    mask = torch.zeros(SIZE, SIZE, dtype=torch.bool)
    mask[rows, cols] = True
    return mask


def confident(mask: torch.Tensor) -> torch.Tensor:
    return torch.where(mask, INSIDE, OUTSIDE)


def settings(**overrides: object) -> EverythingSettings:
    """The stub's settings with filters that act (the stub's defaults switch them all off)."""
    strict = dict(
        pred_iou_thresh=0.5, stability_thresh=0.9, max_area_fraction=0.25, box_nms_thresh=0.7
    )
    return replace(GridModel.defaults, **{**strict, **overrides})


def run(
    designs: list[tuple[torch.Tensor, float]],
    prompt_batch_size: int = 2,
    regions: int = 0,
    **overrides: object,
) -> EverythingResult:
    model = DesignedModel(designs)
    embedding = torch.zeros(1, 1, 1, 1)  # the stub ignores it
    return everything_union(
        model, embedding, GEOMETRY, settings(**overrides), prompt_batch_size, regions=regions
    )


def assert_union(result: EverythingResult, expected: torch.Tensor, kept: int) -> None:
    assert result.union.dtype == torch.bool
    assert torch.equal(result.union, expected)
    assert result.kept == kept


# --- resampling logits onto the slice
# --------------------------------------------------------------


def test_logits_to_slice_is_identity_when_slice_matches_low_res_canvas() -> None:
    logits = torch.randn(3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(logits_to_slice(logits, GEOMETRY), logits, rtol=0, atol=1e-5)


def test_logits_to_slice_crops_a_wide_slice_to_its_rows() -> None:
    # A 6 × 12 slice at scale 1 occupies the top 6 rows of the 12-pixel canvas.
    logits = torch.randn(2, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    wide = CanvasGeometry(height=6, width=SIZE, canvas=SIZE, scale=1.0)
    torch.testing.assert_close(logits_to_slice(logits, wide), logits[:, :6], rtol=0, atol=1e-5)


def test_logits_to_slice_downscaled_slice_averages_2x2_blocks() -> None:
    # A 6 × 6 slice at scale 2 fills the canvas; slice pixel i's centre sits at canvas coordinate
    # (i + 0.5)·2 = 2i + 1, halfway between low-res pixel centres 2i + 0.5 and 2i + 1.5, so bilinear
    # sampling gives the mean of the 2 × 2 block (2i..2i+1, 2j..2j+1).
    logits = torch.randn(1, SIZE, SIZE, generator=torch.Generator().manual_seed(2))
    half = CanvasGeometry(height=6, width=6, canvas=SIZE, scale=2.0)
    expected = logits.reshape(1, 6, 2, 6, 2).mean((2, 4))
    torch.testing.assert_close(logits_to_slice(logits, half), expected, rtol=0, atol=1e-5)


# --- Eq. 2: filters and union
# -----------------------------------------------------------------------


def test_union_of_kept_masks_forms_a_3x3_block() -> None:
    left = block(slice(0, 3), slice(0, 2))  # rows 0–2, cols 0–1
    right = block(slice(0, 3), slice(2, 3))  # rows 0–2, col 2
    # Boxes (x0, y0, x1, y1) = (0, 0, 1, 2) and (2, 0, 2, 2) do not overlap: NMS keeps both.
    result = run([(confident(left), 0.9), (confident(right), 0.8)], prompt_batch_size=1)
    assert_union(result, block(slice(0, 3), slice(0, 3)), kept=2)


def test_predicted_iou_filter_is_strict() -> None:
    good = block(slice(0, 2), slice(0, 2))
    at_threshold = block(slice(4, 6), slice(4, 6))
    negative = block(slice(8, 10), slice(8, 10))
    designs = [(confident(good), 0.9), (confident(at_threshold), 0.5), (confident(negative), -0.1)]
    # IoU > 0.5: 0.9 passes, 0.5 (equal) and −0.1 do not.
    assert_union(run(designs, pred_iou_thresh=0.5), good, kept=1)
    # Threshold 0 disables the filter, even for a negative predicted IoU.
    assert_union(run(designs, pred_iou_thresh=0.0), good | at_threshold | negative, kept=3)


def test_stability_filter_uses_the_plus_minus_one_thresholds() -> None:
    logits = torch.full((SIZE, SIZE), OUTSIDE)
    logits[0, 0:2] = 10.0  # above +1: in the mask at both thresholds
    logits[1, 0:2] = 0.5  # in (0, 1): in the mask, not in the +1 mask
    logits[2, 0:4] = -0.5  # in (−1, 0): outside the mask, inside the −1 mask
    # Stability = |logits > 1| / |logits > −1| = 2 / (2 + 2 + 4) = 0.25; the mask is logits > 0.
    mask = block(slice(0, 2), slice(0, 2))
    empty = torch.zeros(SIZE, SIZE, dtype=torch.bool)
    assert_union(run([(logits, 0.9)], stability_thresh=0.9), empty, kept=0)
    assert_union(run([(logits, 0.9)], stability_thresh=0.26), empty, kept=0)
    assert_union(run([(logits, 0.9)], stability_thresh=0.25), mask, kept=1)  # >= keeps the boundary
    assert_union(run([(logits, 0.9)], stability_thresh=0.0), mask, kept=1)  # 0 disables it


def test_area_filter_drops_masks_of_a_quarter_of_the_slice_or_more() -> None:
    # Limit: area < 0.25 · 12 · 12 = 36 pixels.
    quarter = block(slice(0, 6), slice(0, 6))  # 36 pixels: dropped
    smaller = block(slice(6, 11), slice(5, 12))  # 5 · 7 = 35 pixels: kept
    designs = [(confident(quarter), 0.9), (confident(smaller), 0.9)]
    assert_union(run(designs), smaller, kept=1)
    assert_union(run(designs, max_area_fraction=0.5), quarter | smaller, kept=2)


# Two 5 × 5 masks shifted by one column: boxes (0, 0, 4, 4) and (1, 0, 5, 4), each of area 4·4 = 16,
# overlap 3·4 = 12, box IoU 12 / (16 + 16 − 12) = 0.6.
LEFT5 = block(slice(0, 5), slice(0, 5))
RIGHT5 = block(slice(0, 5), slice(1, 6))
FAR = block(slice(9, 11), slice(9, 11))


def test_box_nms_keeps_the_higher_scoring_of_two_overlapping_masks() -> None:
    designs = [(confident(LEFT5), 0.9), (confident(RIGHT5), 0.8), (confident(FAR), 0.6)]
    # 0.6 > 0.5: the lower-scoring RIGHT5 goes, so column 5 leaves the union; FAR overlaps nothing.
    assert_union(run(designs, box_nms_thresh=0.5), LEFT5 | FAR, kept=2)
    swapped = [(confident(LEFT5), 0.8), (confident(RIGHT5), 0.9), (confident(FAR), 0.6)]
    assert_union(run(swapped, box_nms_thresh=0.5), RIGHT5 | FAR, kept=2)


def test_box_nms_below_the_overlap_or_disabled_keeps_both() -> None:
    designs = [(confident(LEFT5), 0.9), (confident(RIGHT5), 0.8)]
    assert_union(run(designs, box_nms_thresh=0.7), LEFT5 | RIGHT5, kept=2)  # 0.6 <= 0.7
    assert_union(run(designs, box_nms_thresh=1.0), LEFT5 | RIGHT5, kept=2)


def test_nms_runs_before_the_area_filter() -> None:
    # SAM's generator order, then the area filter: a background-sized mask can suppress a smaller
    # one and then be dropped itself.
    big = block(slice(0, 7), slice(0, 7))  # 49 px >= 36; box (0, 0, 6, 6), area 36
    small = block(slice(0, 5), slice(0, 6))  # 30 px; box (0, 0, 5, 4), area 20, inside big's box
    # Box IoU = 20 / 36 ≈ 0.56 > 0.5 → small is suppressed by the higher-scoring big.
    designs = [(confident(big), 0.9), (confident(small), 0.8)]
    empty = torch.zeros(SIZE, SIZE, dtype=torch.bool)
    assert_union(run(designs, box_nms_thresh=0.5), empty, kept=0)
    assert_union(run(designs, box_nms_thresh=1.0), small, kept=1)


def test_nothing_kept_gives_an_empty_union() -> None:
    designs = [(confident(LEFT5), 0.2), (confident(FAR), 0.3)]
    result = run(designs, pred_iou_thresh=0.5)
    assert_union(result, torch.zeros(SIZE, SIZE, dtype=torch.bool), kept=0)
    assert result.union.shape == (SIZE, SIZE)


# --- the kept masks one by one (the pre-annotation's regions) -------------------------------------

# Four disjoint kept masks of areas 6, 12, 4 and 12 (in prompt order), plus one the area filter
# drops (48 px >= 36) and one the IoU filter drops: neither may appear among the regions.
SIX = block(slice(0, 2), slice(0, 3))
TWELVE_A = block(slice(3, 5), slice(0, 6))
FOUR = block(slice(6, 8), slice(0, 2))
TWELVE_B = block(slice(9, 11), slice(0, 6))
HUGE = block(slice(0, 12), slice(8, 12))
DOUBTFUL = block(slice(6, 8), slice(4, 6))
REGION_DESIGNS = [
    (confident(SIX), 0.9),
    (confident(TWELVE_A), 0.9),
    (confident(FOUR), 0.9),
    (confident(TWELVE_B), 0.9),
    (confident(HUGE), 0.9),
    (confident(DOUBTFUL), 0.1),
]


def test_regions_are_the_kept_masks_largest_first_and_their_or_is_the_union() -> None:
    result = run(REGION_DESIGNS, regions=10)
    assert result.kept == 4
    assert result.regions.dtype == torch.bool and result.regions.shape == (4, SIZE, SIZE)
    # By area, descending; the two 12-pixel masks stay in kept (prompt) order.
    for region, expected in zip(result.regions, [TWELVE_A, TWELVE_B, SIX, FOUR]):
        assert torch.equal(region, expected)
    assert torch.equal(result.regions.any(0), result.union)


def test_asking_for_regions_changes_neither_the_union_nor_the_count() -> None:
    plain = run(REGION_DESIGNS)
    assert plain.regions is None
    for cap in (1, 2, 4, 10):
        capped = run(REGION_DESIGNS, regions=cap)
        assert torch.equal(capped.union, plain.union) and capped.kept == plain.kept
        assert len(capped.regions) == min(cap, plain.kept)
    two = run(REGION_DESIGNS, regions=2).regions
    assert torch.equal(two[0], TWELVE_A) and torch.equal(two[1], TWELVE_B)


def test_nothing_kept_gives_no_regions() -> None:
    result = run([(confident(HUGE), 0.9)], regions=8)  # dropped by the area filter
    assert result.kept == 0 and result.regions.shape == (0, SIZE, SIZE)
    result = run([(confident(LEFT5), 0.2)], pred_iou_thresh=0.5, regions=8)  # nothing decoded
    assert result.kept == 0 and result.regions.shape == (0, SIZE, SIZE)


# --- prompt grids ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("length", "side", "stride", "expected"),
    [
        (10, 4, 2, [0, 2, 4, 6]),  # ceil((10 − 4) / 2) + 1 = 4 windows, the last ends at 6 + 4 = 10
        (11, 4, 2, [0, 2, 4, 6, 7]),  # ceil(7 / 2) + 1 = 5 windows, the last moved to 11 − 4 = 7
        (4, 4, 2, [0]),  # one window fits exactly
        (3, 4, 2, [0]),  # window longer than the side: one, clipped by the caller
    ],
)
def test_starts_tile_with_the_last_window_flush(
    length: int, side: int, stride: int, expected: list[int]
) -> None:
    assert _starts(length, side, stride) == expected


def test_box_grid_tiles_the_content_area() -> None:
    # 40 × 56 on a 256 canvas: scale 256/56, content int(40 · 256/56 + 0.5) = int(183.36) = 183 ×
    # 256.
    geometry = CanvasGeometry.fit(40, 56, 256)
    assert (geometry.content_height, geometry.content_width) == (183, 256)
    boxes = GridModel().prompt_grid(geometry, (64, 128, 256), "boxes").long()
    # side 64 (stride 32): y starts 0, 32, 64, 96, 119 (183 − 64); x starts 0, 32, …, 192 → 5 · 7 =
    # 35
    # side 128 (stride 64): y starts 0, 55 (183 − 128); x starts 0, 64, 128 → 2 · 3 = 6
    # side 256: one box, clipped to the content height → 1
    assert len(boxes) == 35 + 6 + 1
    assert boxes[:, 0].min() == 0 and boxes[:, 1].min() == 0
    assert boxes[:, 2].max() == 256 and boxes[:, 3].max() == 183  # flush with the content edges
    assert ((boxes[:, 2] - boxes[:, 0]) <= 256).all() and (boxes[:, 3] <= 183).all()
    assert boxes[-1].tolist() == [0, 0, 256, 183]
    for side, count in ((64, 35), (128, 6)):
        sized = boxes[((boxes[:, 2] - boxes[:, 0]) == side) & ((boxes[:, 3] - boxes[:, 1]) == side)]
        assert len(sized) == count
        covered = torch.zeros(183, 256, dtype=torch.bool)
        for x0, y0, x1, y1 in sized.tolist():
            covered[y0:y1, x0:x1] = True
        assert covered.all(), f"boxes of side {side} leave content pixels uncovered"


@pytest.mark.parametrize("n", [4, 32])
def test_point_grid_equals_sam_grid_scaled_to_the_content(n: int) -> None:
    geometry = CanvasGeometry.fit(40, 56, 256)  # content 183 × 256
    points = GridModel().prompt_grid(geometry, (n,), "points").double().numpy()
    expected = build_point_grid(n) * np.array([256, 183])  # (x, y) order
    np.testing.assert_allclose(points, expected, rtol=0, atol=1e-4)


# --- every view prompted with the original grid mapped onto it
# --------------------------------------

EQ_SIZE = 22  # box grid of side 8, stride 4 on 22 px: starts 0, 4, 8, 12, 14 (last one flush)


class EquivariantModel(GridModel):
    """Box-prompted stub that commutes with flips and rotations: the "embedding" is the canvas
    itself; a box decodes to its bright pixels (index-inclusive corners, as SAM's encoder reads
    them), with predicted IoU = the bright share of the box."""

    canvas_size = EQ_SIZE

    def encode(self, batch: torch.Tensor) -> torch.Tensor:
        return batch[:, :1]

    def decode(
        self, embedding: torch.Tensor, prompts: torch.Tensor, multimask: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        bright = embedding[0, 0] > 0.5
        rows = torch.arange(EQ_SIZE)[:, None]
        cols = torch.arange(EQ_SIZE)[None, :]
        logits, ious = [], []
        for x0, y0, x1, y1 in prompts.tolist():
            box = (cols >= x0) & (cols <= x1) & (rows >= y0) & (rows <= y1)
            logits.append(confident(box & bright))
            ious.append(float((box & bright).sum()) / float(box.sum()))
        return torch.stack(logits)[:, None], torch.tensor(ious)[:, None]


def _symmetric_image() -> torch.Tensor:
    image = torch.zeros(EQ_SIZE, EQ_SIZE)
    image[7:15, 7:15] = 1.0  # centred: unchanged by the 8 symmetries of the square
    image[10:12, 3:19] = 1.0
    image[3:19, 10:12] = 1.0
    return image


def _inverted_unions(prompt_rule: str) -> list[torch.Tensor]:
    from sugfw.augment import IDENTITY, apply_spatial, invert_spatial
    from sugfw.models.base import transform_prompts

    model = EquivariantModel()
    image = _symmetric_image()
    geometry = CanvasGeometry(EQ_SIZE, EQ_SIZE, EQ_SIZE, 1.0)
    everything = replace(
        GridModel.defaults,
        prompt_kind="boxes",
        grid=(8,),
        pred_iou_thresh=0.3,
        stability_thresh=0.0,
        max_area_fraction=1.0,
        box_nms_thresh=1.0,
    )
    base = model.prompt_grid(geometry, everything.grid, "boxes")
    unions = []
    for flip_axis in (None, 0, 1):
        for rot90 in range(4):
            p = replace(IDENTITY, flip_axis=flip_axis, rot90=rot90)
            view = apply_spatial(image, p)
            embedding = model.encode(view[None, None])
            if prompt_rule == "mapped":
                prompts = transform_prompts(base, EQ_SIZE, EQ_SIZE, flip_axis, rot90)
            else:
                prompts = model.prompt_grid(geometry, everything.grid, "boxes")
            union = everything_union(
                model, embedding, geometry, everything, 4, prompts=prompts
            ).union
            unions.append(invert_spatial(union, p))
    return unions


def test_mapped_grid_gives_identical_inverted_unions_on_a_symmetric_image() -> None:
    unions = _inverted_unions("mapped")
    assert unions[0].any() and not unions[0].all()
    for union in unions[1:]:
        assert torch.equal(union, unions[0])


def test_each_views_own_flush_grid_gives_different_unions() -> None:
    # The defect the mapped grid removes: the same model and image, but every view prompted with
    # its own grid (last box flush with the edge), so flipped views see boxes elsewhere.
    unions = _inverted_unions("native")
    assert any(not torch.equal(union, unions[0]) for union in unions[1:])


def test_transform_prompts_maps_a_pixel_like_apply_spatial() -> None:
    from sugfw.augment import IDENTITY, apply_spatial
    from sugfw.models.base import transform_prompts

    image = torch.zeros(5, 7)
    image[1, 2] = 1.0  # row 1, column 2: the point (x, y) = (2, 1)
    for flip_axis in (None, 0, 1):
        for rot90 in range(4):
            moved = apply_spatial(image, replace(IDENTITY, flip_axis=flip_axis, rot90=rot90))
            row, col = (int(v) for v in torch.nonzero(moved)[0])
            point = transform_prompts(torch.tensor([[2.0, 1.0]]), 5, 7, flip_axis, rot90)
            assert point.tolist() == [[col, row]]
            box = transform_prompts(torch.tensor([[2.0, 1.0, 2.0, 1.0]]), 5, 7, flip_axis, rot90)
            assert box.tolist() == [[col, row, col, row]]
