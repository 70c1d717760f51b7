"""Test-time augmentations of a slice and the exact inverse of their spatial part.

A slice (already min-max scaled to [0, 1]) is augmented K times; SAM's masks on each copy are
mapped back with :func:`invert_spatial` and averaged. Intensity ops follow PIL ``ImageEnhance``
semantics but run on float tensors, so a batch can stay on the GPU. Order: gamma, posterize,
contrast, sharpness, brightness (each clipped to [0, 1]), then flip, then rot90.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
import torch
from torch import Tensor

from sugfw.errors import InvalidInputError

GAMMA_CHOICES: tuple[float, ...] = (0.1, 0.5, 1.5, 1.9)
ENHANCE_FACTORS: tuple[float, ...] = (0.1, 0.5, 1.5, 1.9)
FLIP_CHOICES: tuple[int | None, ...] = (None, 0, 1)
AugmentationLaw = Literal["authors", "sparse"]
AUGMENTATION_LAWS: tuple[str, ...] = get_args(AugmentationLaw)
# The authors' law: every op on every view, none the identity.
AUTHORS_FLIP_AXES: tuple[int, ...] = (0, 1)
AUTHORS_ROT90: tuple[int, ...] = (1, 2, 3)
AUTHORS_POSTERIZE_BITS: tuple[int, int] = (4, 9)  # inclusive; 8 and 9 bits leave 8-bit codes as is
# The sparse law (this project's first one): each op is skipped part of the time.
POSTERIZE_BITS_RANGE: tuple[int, int] = (4, 8)  # inclusive; 8 bits keeps an 8-bit value unchanged
ENABLE_PROBABILITY = 0.5

# PIL's ImageFilter.SMOOTH, the "degenerate" image that ImageEnhance.Sharpness blends against.
_SMOOTH_CENTRE_WEIGHT = 5.0
_SMOOTH_SCALE = 13.0


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


@dataclass(frozen=True)
class AugmentationParams:
    gamma: float
    """Exponent applied to intensities; 1.0 = identity."""
    flip_axis: int | None
    """None, 0 (reverse rows: vertical flip) or 1 (reverse columns: horizontal flip)."""
    rot90: int
    """Counter-clockwise quarter turns, 0..3 (``torch.rot90`` on dims (-2, -1))."""
    posterize_bits: int
    """Bits kept of the 8-bit value; 8 or more = identity."""
    contrast: float
    """1.0 = identity."""
    sharpness: float
    """1.0 = identity."""
    brightness: float
    """1.0 = identity."""

    def __post_init__(self) -> None:
        if not (_is_real(self.gamma) and self.gamma > 0 and math.isfinite(self.gamma)):
            raise InvalidInputError(f"gamma={self.gamma!r}: expected a finite number > 0")
        if self.flip_axis not in FLIP_CHOICES or isinstance(self.flip_axis, bool):
            raise InvalidInputError(f"flip_axis={self.flip_axis!r}: expected None, 0 or 1")
        if not (_is_int(self.rot90) and 0 <= self.rot90 <= 3):
            raise InvalidInputError(f"rot90={self.rot90!r}: expected an int in 0..3")
        if not (_is_int(self.posterize_bits) and self.posterize_bits >= 1):
            raise InvalidInputError(
                f"posterize_bits={self.posterize_bits!r}: expected an int >= 1 (8 or more = off)"
            )
        for name in ("contrast", "sharpness", "brightness"):
            value = getattr(self, name)
            if not (_is_real(value) and value >= 0 and math.isfinite(value)):
                raise InvalidInputError(f"{name}={value!r}: expected a finite number >= 0")


IDENTITY = AugmentationParams(
    gamma=1.0,
    flip_axis=None,
    rot90=0,
    posterize_bits=8,
    contrast=1.0,
    sharpness=1.0,
    brightness=1.0,
)


def sample_augmentations(
    k: int, seed: int, law: AugmentationLaw = "authors"
) -> list[AugmentationParams]:
    """Draw ``k`` augmentations from ``numpy.random.default_rng(seed)`` under ``law``.

    ``"authors"`` (the authors' code): every op on every view, each draw uniform and independent:
      - gamma, contrast, sharpness, brightness: each over {0.1, 0.5, 1.5, 1.9};
      - flip_axis: over {0, 1} (always a flip);
      - rot90: over {1, 2, 3} (90, 180 or 270 degrees, never 0);
      - posterize_bits: over 4..9 (8 and 9 keep 8-bit codes unchanged, as in PIL).
    ``"sparse"``: each intensity op applied with probability 0.5 (gamma and the enhance factors
    over the same sets, posterize over 4..8 bits), flip over {None, 0, 1}, rot90 over {0..3}.
    The same ``(k, seed, law)`` gives the same list, and the first j draws do not depend on ``k``.
    """
    if not _is_int(k) or k < 1:
        raise InvalidInputError(f"k={k!r}: expected an int >= 1 augmentations")
    if law not in AUGMENTATION_LAWS:
        raise InvalidInputError(f"law={law!r}: expected one of {AUGMENTATION_LAWS}")
    rng = np.random.default_rng(seed)
    draw = _sample_authors if law == "authors" else _sample_one
    return [draw(rng) for _ in range(k)]


def _choice(rng: np.random.Generator, choices: Sequence) -> object:
    return choices[int(rng.integers(len(choices)))]


def _sample_authors(rng: np.random.Generator) -> AugmentationParams:
    low, high = AUTHORS_POSTERIZE_BITS
    # Drawn in the authors' order of application, which is the field order (arguments are
    # evaluated left to right): gamma, flip, rotation, posterize, enhancers.
    return AugmentationParams(
        float(_choice(rng, GAMMA_CHOICES)),
        int(_choice(rng, AUTHORS_FLIP_AXES)),
        int(_choice(rng, AUTHORS_ROT90)),
        int(rng.integers(low, high + 1)),
        *(float(_choice(rng, ENHANCE_FACTORS)) for _ in range(3)),
    )


def _sample_one(rng: np.random.Generator) -> AugmentationParams:
    """One draw of the sparse law."""

    def maybe(choices: Sequence[float], off: float) -> float:
        # Draw the value unconditionally so every draw consumes the same amount of the stream.
        enabled = rng.random() < ENABLE_PROBABILITY
        value = _choice(rng, choices)
        return float(value) if enabled else off

    low, high = POSTERIZE_BITS_RANGE
    # Field order is draw order (arguments are evaluated left to right).
    return AugmentationParams(
        maybe(GAMMA_CHOICES, 1.0),
        _choice(rng, FLIP_CHOICES),
        int(rng.integers(4)),
        int(maybe(range(low, high + 1), high)),
        *(maybe(ENHANCE_FACTORS, 1.0) for _ in range(3)),
    )


def apply_intensity(image: Tensor, p: AugmentationParams) -> Tensor:
    """Gamma, posterize, contrast, sharpness, brightness on an (H, W) or (B, H, W) image in [0, 1].

    Identity steps are skipped so that identity parameters return the input values bit-for-bit.
    """
    _check_image(image)
    x = image.clone()
    if p.gamma != 1.0:
        x = _clip(x**p.gamma)
    if p.posterize_bits < 8:
        x = _posterize(x, p.posterize_bits)
    if p.contrast != 1.0:
        mean = x.mean(dim=(-2, -1), keepdim=True)  # per image, PIL's mean grey level
        x = _clip(_blend(mean, x, p.contrast))
    if p.sharpness != 1.0:
        x = _clip(_blend(_smooth(x), x, p.sharpness))
    if p.brightness != 1.0:
        x = _clip(x * p.brightness)
    return x


def apply_spatial(x: Tensor, p: AugmentationParams) -> Tensor:
    """Flip, then rotate, the last two dims of ``x`` (an image, a mask stack, logits...)."""
    _check_spatial(x)
    if p.flip_axis is not None:
        x = torch.flip(x, dims=(_flip_dim(p.flip_axis),))
    return torch.rot90(x, p.rot90, dims=(-2, -1))


def invert_spatial(x: Tensor, p: AugmentationParams) -> Tensor:
    """Exact inverse of :func:`apply_spatial`: rotate back, then undo the same flip."""
    _check_spatial(x)
    x = torch.rot90(x, -p.rot90, dims=(-2, -1))
    if p.flip_axis is not None:
        x = torch.flip(x, dims=(_flip_dim(p.flip_axis),))
    return x


def augment(image: Tensor, p: AugmentationParams) -> Tensor:
    """Intensity then spatial augmentation of an (H, W) or (B, H, W) image in [0, 1]."""
    return apply_spatial(apply_intensity(image, p), p)


def _posterize(x: Tensor, bits: int) -> Tensor:
    # Work on the 8-bit code like PIL: floor to 0..255, drop the low (8 - bits) bits.
    codes = torch.floor(x * 255).to(torch.int32)
    kept = codes & ~((1 << (8 - bits)) - 1)
    return _clip(kept.to(x.dtype) / 255)


def _smooth(x: Tensor) -> Tensor:
    """PIL's SMOOTH filter: 3x3 kernel [[1,1,1],[1,5,1],[1,1,1]]/13 inside, border pixels kept."""
    smoothed = x.clone()
    height, width = x.shape[-2:]
    if height < 3 or width < 3:
        return smoothed  # every pixel is a border pixel
    # Sum of the 3x3 neighbourhood via shifted views: dtype- and device-agnostic, no conv kernels.
    neighbourhood = sum(
        x[..., dr : height - 2 + dr, dc : width - 2 + dc] for dr in range(3) for dc in range(3)
    )
    centre = x[..., 1:-1, 1:-1]
    weighted = neighbourhood + (_SMOOTH_CENTRE_WEIGHT - 1) * centre  # centre already counted once
    smoothed[..., 1:-1, 1:-1] = weighted / _SMOOTH_SCALE
    return smoothed


def _blend(degenerate: Tensor, x: Tensor, factor: float) -> Tensor:
    # PIL ImageEnhance: factor 0 gives the degenerate image, 1 the original, >1 extrapolates.
    return degenerate + factor * (x - degenerate)


def _clip(x: Tensor) -> Tensor:
    return x.clamp(0.0, 1.0)


def _flip_dim(axis: int) -> int:
    return -2 if axis == 0 else -1


def _check_image(image: Tensor) -> None:
    if not isinstance(image, Tensor):
        raise InvalidInputError(f"image of type {type(image).__name__}: expected a torch.Tensor")
    if image.ndim not in (2, 3) or image.numel() == 0:
        raise InvalidInputError(
            f"image of shape {tuple(image.shape)}: expected a non-empty (H, W) or (B, H, W) tensor"
        )
    if not image.is_floating_point():
        raise InvalidInputError(f"image of dtype {image.dtype}: expected a floating-point tensor")
    if not bool(((image >= 0) & (image <= 1)).all()):
        raise InvalidInputError(
            "image values outside [0, 1] (or not finite): expected a min-max scaled slice"
        )


def _check_spatial(x: Tensor) -> None:
    if not isinstance(x, Tensor):
        raise InvalidInputError(f"input of type {type(x).__name__}: expected a torch.Tensor")
    if x.ndim < 2:
        raise InvalidInputError(
            f"input of shape {tuple(x.shape)}: expected at least 2 dims (..., H, W)"
        )
