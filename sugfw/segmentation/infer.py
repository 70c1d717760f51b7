"""Slice-by-slice inference of a 2-D segmentation network on a volume."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from sugfw.errors import InvalidInputError


def predict_volume(
    model: nn.Module, slices: np.ndarray, device: str | torch.device = "cpu", batch_size: int = 16
) -> np.ndarray:
    """Label map (Z, H, W) int64 of the argmax class for each slice of a (Z, H, W) float volume.

    The model is moved to ``device`` and run in eval mode; its previous train/eval mode is restored.
    """
    if slices.ndim != 3:
        raise InvalidInputError(f"expected a (Z, H, W) volume of slices, got shape {slices.shape}")
    if batch_size < 1:
        raise InvalidInputError(f"batch_size must be >= 1, got {batch_size}")
    was_training = model.training
    model.to(device).eval()
    labels = np.empty(slices.shape, dtype=np.int64)
    try:
        with torch.inference_mode():
            for start in range(0, len(slices), batch_size):
                chunk = slices[start : start + batch_size]
                batch = torch.from_numpy(np.ascontiguousarray(chunk, dtype=np.float32))
                logits = model(batch[:, None].to(device))
                labels[start : start + len(batch)] = logits.argmax(1).cpu().numpy()
    finally:
        model.train(was_training)
    return labels
