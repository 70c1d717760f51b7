"""Slice-by-slice inference of a 2-D segmentation network on a volume."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sugfw.errors import InvalidInputError


def predict_volume(
    model: nn.Module,
    slices: np.ndarray,
    device: str | torch.device = "cpu",
    batch_size: int = 16,
    output_size: tuple[int, int] | None = None,
) -> np.ndarray:
    """Label map (Z, H, W) int64 of the argmax class for each slice of a (Z, H, W) float volume.

    With ``output_size`` the class scores are first resized bilinearly to that (H, W) (a volume
    processed at a working size, labelled at its original size). The model is moved to ``device``
    and run in eval mode; its previous train/eval mode is restored.
    """
    if slices.ndim != 3:
        raise InvalidInputError(f"expected a (Z, H, W) volume of slices, got shape {slices.shape}")
    if batch_size < 1:
        raise InvalidInputError(f"batch_size must be >= 1, got {batch_size}")
    was_training = model.training
    model.to(device).eval()
    size = tuple(output_size) if output_size is not None else tuple(slices.shape[1:])
    labels = np.empty((len(slices), *size), dtype=np.int64)
    try:
        with torch.inference_mode():
            for start in range(0, len(slices), batch_size):
                chunk = slices[start : start + batch_size]
                batch = torch.from_numpy(np.ascontiguousarray(chunk, dtype=np.float32))
                logits = model(batch[:, None].to(device))
                if tuple(logits.shape[-2:]) != size:
                    logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
                labels[start : start + len(batch)] = logits.argmax(1).cpu().numpy()
    finally:
        model.train(was_training)
    return labels


UNET_STRIDE = 16
"""The UNet pools four times: sides must be multiples of 16."""


def segment(
    model: nn.Module, images: np.ndarray, device: str | torch.device, stride: int = UNET_STRIDE
) -> np.ndarray:
    """(Z, H, W) label map of the network on (Z, H, W) z-scored slices of any size, zero-padded
    to a multiple of ``stride`` and cropped back."""
    height, width = images.shape[1:]
    pad_h, pad_w = -height % stride, -width % stride
    # 0 is the mean of a z-scored slice: padding adds no edge for the network to segment.
    padded = np.pad(images, ((0, 0), (0, pad_h), (0, pad_w)))
    return predict_volume(model, padded, device)[:, :height, :width]
