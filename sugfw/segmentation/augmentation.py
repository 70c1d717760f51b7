"""Training-time augmentation of (slice, label) pairs for the downstream UNet.

Two laws, named by ``TrainConfig.augmentation``:

- ``"rot_flip"``: the paper's and the authors' (one of the 8 symmetries of the square, uniformly).
- ``"monai"``: the field's standard spatial and intensity augmentation, in MONAI's transforms,
  with nnU-Net's probabilities for 2-D data where it has them: one affine with p = 0.36 (nnU-Net
  draws rotation and scaling with p = 0.2 each; 1 − 0.8² is the chance of either) that rotates by
  any angle and scales the first image axis by 0.7–1.4 (MONAI's ``scale_range`` is given for one
  axis, so the second is not scaled: a stretch, not nnU-Net's isotropic zoom; the figures in
  docs/benchmarks.md were measured with this law), mirroring on both axes (p = 0.5 each), Gaussian
  noise (p = 0.1), Gaussian blur (p = 0.2), brightness (multiplicative, p = 0.15), contrast (scaled
  about the mean, p = 0.15) and gamma (p = 0.3). The label follows every spatial transform with
  nearest interpolation, so it stays a label map; intensity transforms touch only the image. Elastic
  deformation is left out, as nnU-Net leaves it out by default.

The MONAI pipeline draws from its own generators; it is built and seeded from the training loop's
numpy generator for every batch, so a run's augmentation is a function of its seed (and a resumed
run, which restores that generator, continues the same stream).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Literal, get_args

import numpy as np
import torch

from sugfw.errors import InvalidInputError

AugmentationLaw = Literal["rot_flip", "monai"]
AUGMENTATION_LAWS: tuple[str, ...] = get_args(AugmentationLaw)
IMAGE, LABEL = "image", "label"
Window = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
"""Cuts a (slice, label) pair before augmentation, e.g. a random crop."""
SPATIAL_PROBABILITY = 0.2
SCALE_RANGE = (0.7, 1.4)


def monai_pipeline() -> Any:
    """The ``"monai"`` law as one MONAI ``Compose`` over {"image", "label"}, each (1, H, W)."""
    # Imported here: MONAI takes a second to import, and only training needs it.
    from monai.transforms import (
        Compose,
        RandAdjustContrastd,
        RandAffined,
        RandFlipd,
        RandGaussianNoised,
        RandGaussianSmoothd,
        RandScaleIntensityd,
        RandScaleIntensityFixedMeand,
    )

    both = (IMAGE, LABEL)
    return Compose(
        [
            RandAffined(
                keys=both,
                prob=1 - (1 - SPATIAL_PROBABILITY) ** 2,  # rotation or scaling or both
                rotate_range=(math.pi,),
                # MONAI scales by 1 + u, u uniform in the range; one range: the first axis only.
                scale_range=((SCALE_RANGE[0] - 1, SCALE_RANGE[1] - 1),),
                mode=("bilinear", "nearest"),
                padding_mode="zeros",  # 0: the z-scored mean intensity and the background label
            ),
            RandFlipd(keys=both, prob=0.5, spatial_axis=0),
            RandFlipd(keys=both, prob=0.5, spatial_axis=1),
            RandGaussianNoised(keys=IMAGE, prob=0.1, mean=0.0, std=0.1),
            RandGaussianSmoothd(keys=IMAGE, prob=0.2, sigma_x=(0.5, 1.0), sigma_y=(0.5, 1.0)),
            RandScaleIntensityd(keys=IMAGE, prob=0.15, factors=0.25),
            RandScaleIntensityFixedMeand(keys=IMAGE, prob=0.15, factors=0.25),
            RandAdjustContrastd(keys=IMAGE, prob=0.3, gamma=(0.7, 1.5)),
        ]
    )


def augment_pairs(
    images: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    law: AugmentationLaw,
    rng: np.random.Generator,
    window: Window | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch (B, 1, h, w) float32 and its labels (B, h, w) int64, each pair first cut by
    ``window`` (e.g. a random crop drawing from ``rng``; None: whole) and then augmented by ``law``.

    The windowed pairs must share one (h, w) (square for ``rot_flip``, whose quarter turns swap
    the sides). ``rot_flip`` draws window and symmetry pair by pair, the paper recipe's stream.
    """
    if law not in AUGMENTATION_LAWS:
        raise InvalidInputError(
            f"unknown augmentation {law!r}; expected one of {AUGMENTATION_LAWS}"
        )
    if not images or len(images) != len(labels):
        raise InvalidInputError(
            f"augmentation needs as many labels as images (at least one), got {len(images)} and "
            f"{len(labels)}"
        )
    window = window or (lambda image, label: (image, label))
    if law == "rot_flip":
        pairs = [rot_flip(*window(image, label), rng) for image, label in zip(images, labels)]
        _check_shapes(pairs, square=True)
        x = np.stack([image for image, _ in pairs]).astype(np.float32)[:, None]
        y = np.stack([label for _, label in pairs]).astype(np.int64)
        return torch.from_numpy(x), torch.from_numpy(y)
    from monai.utils import convert_to_tensor

    pairs = [window(image, label) for image, label in zip(images, labels)]
    _check_shapes(pairs, square=False)
    pipeline = monai_pipeline()
    pipeline.set_random_state(seed=int(rng.integers(2**31)))
    xs, ys = [], []
    for image, label in pairs:
        out = pipeline(
            {
                IMAGE: torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None],
                LABEL: torch.from_numpy(np.ascontiguousarray(label, dtype=np.float32))[None],
            }
        )
        # Plain tensors out: MONAI's MetaTensor would carry its metadata into the model.
        xs.append(convert_to_tensor(out[IMAGE], dtype=torch.float32, track_meta=False))
        ys.append(convert_to_tensor(out[LABEL], track_meta=False)[0].round().long())
    return torch.stack(xs), torch.stack(ys)


def _check_shapes(pairs: Sequence[tuple[np.ndarray, np.ndarray]], square: bool) -> None:
    shapes = {image.shape for image, _ in pairs} | {label.shape for _, label in pairs}
    shape = next(iter(shapes))
    if len(shapes) != 1 or len(shape) != 2 or (square and shape[0] != shape[1]):
        kind = "square 2-D pairs" if square else "2-D pairs"
        raise InvalidInputError(f"augmentation needs {kind} of one shape, got {sorted(shapes)}")


def rot_flip(
    image: np.ndarray, label: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """One of the 8 symmetries of the square, uniformly: rot90 by k ∈ 0..3, then a left-right flip
    with probability 1/2 (the authors' always-flip on a random axis gives the same distribution)."""
    k = int(rng.integers(4))
    image, label = np.rot90(image, k), np.rot90(label, k)
    if rng.random() < 0.5:
        image, label = image[:, ::-1], label[:, ::-1]
    return image, label
