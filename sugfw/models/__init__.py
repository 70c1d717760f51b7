"""SAM-family model registry: one builder per model name."""

from __future__ import annotations

from pathlib import Path

import torch

from sugfw.errors import CheckpointError, InvalidInputError
from sugfw.models.base import CanvasGeometry, EverythingSettings, SegmenterModel
from sugfw.models.litemedsam import build_litemedsam
from sugfw.models.sam import SAM_VARIANTS, build_sam

MODEL_NAMES = ("litemedsam", *SAM_VARIANTS)


def resolve_device(device: str | None = None) -> torch.device:
    """``None``/"auto" → CUDA when available, else CPU."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def build_model(
    name: str = "litemedsam",
    checkpoint: str | Path | None = None,
    device: str | None = None,
    random_weights: bool = False,
) -> SegmenterModel:
    """Build a model by name. SAM variants need ``checkpoint`` unless ``random_weights`` is set."""
    dev = resolve_device(device)
    if name == "litemedsam":
        return build_litemedsam(
            dev, Path(checkpoint) if checkpoint else None, pretrained=not random_weights
        )
    if name in SAM_VARIANTS:
        if not checkpoint and not random_weights:
            official = SAM_VARIANTS[name][1]
            raise CheckpointError(
                f"{name} needs a checkpoint path (the official file is {official})"
            )
        return build_sam(name, dev, Path(checkpoint) if checkpoint and not random_weights else None)
    raise InvalidInputError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}")


__all__ = [
    "CanvasGeometry",
    "EverythingSettings",
    "MODEL_NAMES",
    "SegmenterModel",
    "build_model",
    "resolve_device",
]
