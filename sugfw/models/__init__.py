"""SAM-family model registry: one builder per model name."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch

from sugfw.errors import CheckpointError
from sugfw.models.base import CanvasGeometry, EverythingSettings, SegmenterModel
from sugfw.models.litemedsam import build_litemedsam
from sugfw.models.sam import SAM_VARIANTS, build_sam
from sugfw.registry import Registry


@dataclass(frozen=True)
class ModelSpec:
    build: Callable[[torch.device, Path | None, bool], SegmenterModel]
    """(device, checkpoint or None, random_weights) -> the model."""


def _litemedsam(
    device: torch.device, checkpoint: Path | None, random_weights: bool
) -> SegmenterModel:
    return build_litemedsam(device, checkpoint, pretrained=not random_weights)


def _sam(
    name: str, device: torch.device, checkpoint: Path | None, random_weights: bool
) -> SegmenterModel:
    if random_weights:
        return build_sam(name, device, None)
    if checkpoint is None:
        official = SAM_VARIANTS[name][1]
        raise CheckpointError(f"{name} needs a checkpoint path (the official file is {official})")
    return build_sam(name, device, checkpoint)


MODELS: Registry[ModelSpec] = Registry(
    {
        "litemedsam": ModelSpec(_litemedsam),
        **{name: ModelSpec(partial(_sam, name)) for name in SAM_VARIANTS},
    },
    refusal="unknown model {name!r}; choose one of {choices}",
)
MODEL_NAMES: tuple[str, ...] = tuple(MODELS)


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
    # An empty path (e.g. an unset environment variable) counts as none, never as random weights.
    return MODELS.lookup(name).build(dev, Path(checkpoint) if checkpoint else None, random_weights)


__all__ = [
    "CanvasGeometry",
    "EverythingSettings",
    "MODELS",
    "MODEL_NAMES",
    "ModelSpec",
    "SegmenterModel",
    "build_model",
    "resolve_device",
]
