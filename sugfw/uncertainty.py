"""Uncertainty (Eq. 3) and prototype-guided feature pooling, PGDR (Eq. 4–5).

Eq. 3 sign. The paper prints U = −M̄(1−M̄) + 0.5, which makes uncertain pixels weigh *less*
(range 0.25–0.5); its text says the map should "amplify uncertain regions", and the authors' code
uses U = +M̄(1−M̄) + 0.5 (range 0.5–0.75). The default, ``"code"``, follows the text and the code,
which produced the published numbers; ``"paper"`` gives the printed formula.

Grid alignment. The encoder sees the slice resized into the top-left of a square canvas, so the
slice covers only part of the 64 × 64 patch grid when it is not square. ``"content"`` (default)
pools U onto exactly the cells the slice covers, weighting partly covered cells by their coverage;
``"authors"`` reproduces the authors' code, which pools U over the whole grid while the slice,
placed without resizing, fills only its top-left corner (weights land on padding tokens).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from sugfw.models.base import CanvasGeometry

UncertaintySign = Literal["code", "paper"]
GridAlignment = Literal["content", "authors"]


def mean_mask(masks: torch.Tensor) -> torch.Tensor:
    """M̄: pixel-wise mean of K binary masks (K, H, W) registered to the original slice."""
    return masks.float().mean(0)


def uncertainty_map(mean: torch.Tensor, sign: UncertaintySign = "code") -> torch.Tensor:
    """Eq. 3: U = ±M̄(1 − M̄) + 0.5 (see the module docstring for the sign)."""
    spread = mean * (1 - mean)
    if sign == "code":
        return spread + 0.5
    if sign == "paper":
        return 0.5 - spread
    raise ValueError(f"unknown uncertainty sign {sign!r}; use 'code' or 'paper'")


def patch_weights(
    u_map: torch.Tensor, geometry: CanvasGeometry, grid: int, alignment: GridAlignment = "content"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pool an (H, W) map onto the encoder's grid × grid patches.

    Returns (weights, coverage): the summed-over-patch map divided by the patch area (so a cell
    half covered by the slice gets half its mean), and the fraction of each cell the slice covers.
    """
    if alignment == "authors":
        weights = F.adaptive_avg_pool2d(u_map[None, None].float(), grid)[0, 0]
        return weights, torch.ones_like(weights)
    if alignment != "content":
        raise ValueError(f"unknown grid alignment {alignment!r}; use 'content' or 'authors'")
    size = (geometry.content_height, geometry.content_width)
    resized = u_map[None, None].float()
    if size != tuple(u_map.shape):
        resized = F.interpolate(
            resized, size=size, mode="bilinear", align_corners=False, antialias=True
        )
    pad = (0, geometry.canvas - size[1], 0, geometry.canvas - size[0])
    cell = geometry.canvas // grid
    weights = F.avg_pool2d(F.pad(resized, pad), cell)[0, 0]
    coverage = F.avg_pool2d(F.pad(torch.ones_like(resized), pad), cell)[0, 0]
    return weights, coverage


def weighted_pool(features: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Eq. 4: F̂ = Σ_r F_r w_r / Σ_r w_r over patches r, for features (C, g, g) and weights (g,
    g)."""
    w = weights.to(features.dtype)
    return (features * w).sum((-2, -1)) / w.sum()


def pgdr(
    features: torch.Tensor,
    u_map: torch.Tensor,
    geometry: CanvasGeometry,
    alignment: GridAlignment = "content",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Eq. 4–5 for one slice: (uncertainty-weighted feature F̂, plain mean feature, scalar Û).

    The plain mean (patches weighted by coverage only) is the "without PGDR" ablation's feature.
    """
    weights, coverage = patch_weights(u_map, geometry, features.shape[-1], alignment)
    return weighted_pool(features, weights), weighted_pool(features, coverage), u_map.float().mean()
