"""Eq. 3–5 on hand-computed cases: mean mask, uncertainty map, patch weights, pooled features."""

from __future__ import annotations

import pytest
import torch

from sugfw.models.base import CanvasGeometry
from sugfw.uncertainty import mean_mask, patch_weights, pgdr, uncertainty_map, weighted_pool


def close(actual: torch.Tensor, expected: list | float) -> None:
    torch.testing.assert_close(
        actual.double(), torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-6
    )


# --- Eq. 3: mean mask and uncertainty map --------------------------------------------------------

THREE_MASKS_2X2 = torch.tensor(
    [
        [[0, 1], [1, 1]],
        [[0, 0], [1, 1]],
        [[0, 0], [0, 1]],
    ],
    dtype=torch.bool,
)
# Per pixel, masks covering it out of 3: [[0, 1], [2, 3]] → M̄ = [[0, 1/3], [2/3, 1]].
MEAN_2X2 = [[0.0, 1 / 3], [2 / 3, 1.0]]


def test_mean_mask_of_three_binary_masks_2x2() -> None:
    close(mean_mask(THREE_MASKS_2X2), MEAN_2X2)


def test_mean_mask_of_three_binary_masks_3x3() -> None:
    masks = torch.tensor(
        [
            [[1, 1, 0], [0, 1, 0], [0, 0, 0]],
            [[1, 0, 0], [0, 1, 1], [0, 0, 0]],
            [[1, 1, 1], [0, 1, 0], [0, 0, 1]],
        ],
        dtype=torch.uint8,
    )
    # Counts per pixel: [[3, 2, 1], [0, 3, 1], [0, 0, 1]], divided by 3.
    close(mean_mask(masks), [[1, 2 / 3, 1 / 3], [0, 1, 1 / 3], [0, 0, 1 / 3]])


def test_uncertainty_code_sign_amplifies_disagreement() -> None:
    # "code": U = M̄(1 − M̄) + 0.5.
    #   M̄ = 0 or 1  → 0 + 0.5 = 0.5
    #   M̄ = 1/3     → (1/3)(2/3) + 0.5 = 2/9 + 0.5
    #   M̄ = 2/3     → (2/3)(1/3) + 0.5 = 2/9 + 0.5
    u = uncertainty_map(mean_mask(THREE_MASKS_2X2), "code")
    close(u, [[0.5, 2 / 9 + 0.5], [2 / 9 + 0.5, 0.5]])


def test_uncertainty_paper_sign_damps_disagreement() -> None:
    # "paper": U = 0.5 − M̄(1 − M̄): M̄ ∈ {0, 1} → 0.5; M̄ ∈ {1/3, 2/3} → 0.5 − 2/9.
    u = uncertainty_map(mean_mask(THREE_MASKS_2X2), "paper")
    close(u, [[0.5, 0.5 - 2 / 9], [0.5 - 2 / 9, 0.5]])


def test_uncertainty_default_sign_is_code_and_peaks_at_even_split() -> None:
    # M̄ = 1/2 is the most uncertain pixel: (1/2)(1/2) = 1/4 → code 0.75, paper 0.25.
    half = torch.tensor([[0.5]])
    close(uncertainty_map(half), [[0.75]])
    close(uncertainty_map(half, "paper"), [[0.25]])


def test_uncertainty_unknown_sign_is_rejected() -> None:
    with pytest.raises(ValueError, match="'minus'"):
        uncertainty_map(torch.zeros(2, 2), "minus")  # type: ignore[arg-type]


# --- Eq. 4: weighted pooling ---------------------------------------------------------------------


def test_weighted_pool_hand_computed() -> None:
    features = torch.tensor(
        [
            [[1.0, 2.0], [3.0, 4.0]],
            [[10.0, 0.0], [0.0, -10.0]],
        ]
    )
    weights = torch.tensor([[1.0, 0.0], [1.0, 2.0]])  # Σw = 4
    # channel 0: (1·1 + 2·0 + 3·1 + 4·2) / 4 = 12 / 4 = 3
    # channel 1: (10·1 + 0·0 + 0·1 + (−10)·2) / 4 = −10 / 4 = −2.5
    close(weighted_pool(features, weights), [3.0, -2.5])
    # Only relative weights matter: scaling every weight leaves F̂ unchanged.
    close(weighted_pool(features, 7 * weights), [3.0, -2.5])


# --- patch weights: which cells of the encoder grid the slice covers ----------------------------

# A 4 × 8 slice on an 8-pixel canvas with a 4 × 4 grid (2-pixel cells): the slice keeps its size
# (scale 8/8 = 1) and fills the top 4 canvas rows, i.e. the top two rows of cells.
WIDE = CanvasGeometry(height=4, width=8, canvas=8, scale=1.0)
RAMP = torch.arange(32, dtype=torch.float32).reshape(4, 8)  # U[r, c] = 8r + c


def test_content_alignment_weights_only_the_covered_cells() -> None:
    weights, coverage = patch_weights(RAMP, WIDE, grid=4, alignment="content")
    # Cell (0, j) averages rows 0–1, cols 2j, 2j+1: (2j + 2j+1 + 8+2j + 9+2j) / 4 = 2j + 4.5.
    # Cell (1, j) averages rows 2–3: (16+2j + 17+2j + 24+2j + 25+2j) / 4 = 2j + 20.5.
    # Cells in rows 2–3 lie on padding: weight 0, coverage 0.
    close(
        weights,
        [
            [4.5, 6.5, 8.5, 10.5],
            [20.5, 22.5, 24.5, 26.5],
            [0, 0, 0, 0],
            [0, 0, 0, 0],
        ],
    )
    close(coverage, [[1] * 4, [1] * 4, [0] * 4, [0] * 4])


def test_content_alignment_partly_covered_cells_weigh_by_coverage() -> None:
    # A 3 × 8 slice: cell row 1 spans canvas rows 2–3 but the slice only row 2, so half of it.
    geometry = CanvasGeometry(height=3, width=8, canvas=8, scale=1.0)
    u = torch.full((3, 8), 0.6)
    weights, coverage = patch_weights(u, geometry, grid=4, alignment="content")
    # Row 0 of cells: mean 0.6. Row 1: (0.6 + 0.6 + 0 + 0) / 4 = 0.3 (= coverage 1/2 × 0.6).
    close(weights, [[0.6] * 4, [0.3] * 4, [0] * 4, [0] * 4])
    close(coverage, [[1] * 4, [0.5] * 4, [0] * 4, [0] * 4])


def test_content_alignment_resizes_the_map_onto_the_content_area() -> None:
    # A 2 × 4 slice scaled ×2 (longest side 4 → canvas 8) covers canvas rows 0–3 again; a constant
    # map stays constant under resizing, so covered cells get that constant.
    geometry = CanvasGeometry.fit(2, 4, canvas=8)
    assert (geometry.content_height, geometry.content_width) == (4, 8)
    weights, coverage = patch_weights(
        torch.full((2, 4), 0.7), geometry, grid=4, alignment="content"
    )
    close(weights, [[0.7] * 4, [0.7] * 4, [0] * 4, [0] * 4])
    close(coverage, [[1] * 4, [1] * 4, [0] * 4, [0] * 4])


def test_authors_alignment_pools_the_map_over_the_whole_grid() -> None:
    weights, coverage = patch_weights(RAMP, WIDE, grid=4, alignment="authors")
    # Adaptive pooling of 4 × 8 onto 4 × 4: one row × two columns per cell,
    # cell (i, j) = (8i + 2j + 8i + 2j + 1) / 2 = 8i + 2j + 0.5; every cell counts fully.
    close(weights, [[8 * i + 2 * j + 0.5 for j in range(4)] for i in range(4)])
    close(coverage, [[1] * 4] * 4)


def test_unknown_alignment_is_rejected() -> None:
    with pytest.raises(ValueError, match="'centre'"):
        patch_weights(RAMP, WIDE, grid=4, alignment="centre")  # type: ignore[arg-type]


# --- Eq. 4–5 together -----------------------------------------------------------------------------


def test_pgdr_matches_hand_values() -> None:
    rows, cols = torch.meshgrid(torch.arange(4.0), torch.arange(4.0), indexing="ij")
    features = torch.stack([rows, cols])  # channel 0 = cell row i, channel 1 = cell column j
    f_hat, f_mean, u_hat = pgdr(features, RAMP, WIDE, alignment="content")
    # Weights from the content test: row 0 = [4.5, 6.5, 8.5, 10.5] (Σ 30), row 1 = [20.5 … 26.5] (Σ
    # 94),
    # total 124.
    # channel 0: (0·30 + 1·94) / 124 = 94/124
    # channel 1: row 0: 0·4.5 + 1·6.5 + 2·8.5 + 3·10.5 = 55; row 1: 22.5 + 49 + 79.5 = 151 → 206/124
    close(f_hat, [94 / 124, 206 / 124])
    # Plain mean over the 8 covered cells: channel 0 (4·0 + 4·1)/8 = 0.5; channel 1 2·(0+1+2+3)/8 =
    # 1.5.
    close(f_mean, [0.5, 1.5])
    # Û = mean of 0..31 = 15.5.
    close(u_hat, 15.5)
