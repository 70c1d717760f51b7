"""Monte-Carlo dropout signals of a trained UNet on unlabelled slices.

For each slice, T stochastic passes (dropout on, batch norm in eval mode, seeded) give softmax
maps p_1..p_T and their mean p̄. Per pixel:

- predictive entropy H[p̄] = -Σ_c p̄_c log p̄_c (nats): how unsure the averaged prediction is;
- mutual information (BALD) H[p̄] - (1/T) Σ_t H[p_t]: the part of it the passes disagree on.

The per-slice figure is the mean over the slice's pixels. Background far from any structure is
near 0 on both, so slices the model finds nothing in rank low, and slices where it is unsure of
a boundary rank high. ``features`` is the global average of the deepest encoder block's output in
a deterministic pass (256 values): what the network sees, for diversity.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from sugfw.errors import InvalidInputError

DEFAULT_PASSES = 8
_EPS = 1e-12


@dataclass(frozen=True)
class UnetSignals:
    entropy: np.ndarray
    """(N,) mean predictive entropy per slice, nats."""
    mutual_information: np.ndarray
    """(N,) mean mutual information per slice, nats."""
    features: np.ndarray
    """(N, D) float32 pooled bottleneck features of the deterministic pass."""
    foreground: np.ndarray
    """(N,) share of pixels whose mean prediction is not background."""


def pixel_entropy(probabilities: torch.Tensor) -> torch.Tensor:
    """Entropy over the class axis (1) of (B, C, H, W) probabilities: (B, H, W), nats."""
    return -(probabilities * torch.log(probabilities.clamp_min(_EPS))).sum(dim=1)


def unet_signals(
    model: nn.Module,
    images: np.ndarray,
    passes: int = DEFAULT_PASSES,
    seed: int = 0,
    device: str | torch.device = "cpu",
    batch_size: int = 8,
) -> UnetSignals:
    """Signals of ``model`` on (N, H, W) float32 slices (prepared as for training)."""
    if images.ndim != 3:
        raise InvalidInputError(f"expected (N, H, W) slices, got shape {images.shape}")
    if passes < 2:
        raise InvalidInputError(f"Monte-Carlo dropout needs passes >= 2, got {passes}")
    if batch_size < 1:
        raise InvalidInputError(f"batch_size must be >= 1, got {batch_size}")
    was_training = model.training
    model.to(device).eval()
    pooled: list[torch.Tensor] = []
    hook = model.encoder[-1].register_forward_hook(
        lambda _module, _inputs, output: pooled.append(output.mean(dim=(2, 3)).cpu())
    )
    entropy, information, features, foreground = [], [], [], []
    try:
        with torch.inference_mode(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for start in range(0, len(images), batch_size):
                batch = torch.from_numpy(
                    np.ascontiguousarray(images[start : start + batch_size], dtype=np.float32)
                )[:, None].to(device)
                pooled.clear()
                model(batch)  # deterministic pass: the features
                features.append(pooled[0].numpy())
                _set_dropout(model, True)
                samples = [torch.softmax(model(batch), dim=1) for _ in range(passes)]
                _set_dropout(model, False)
                stacked = torch.stack(samples)  # (T, B, C, H, W)
                mean = stacked.mean(dim=0)
                total = pixel_entropy(mean)
                expected = torch.stack([pixel_entropy(p) for p in stacked]).mean(dim=0)
                entropy.append(total.mean(dim=(1, 2)).cpu().numpy())
                information.append((total - expected).mean(dim=(1, 2)).cpu().numpy())
                foreground.append((mean.argmax(dim=1) > 0).float().mean(dim=(1, 2)).cpu().numpy())
    finally:
        hook.remove()
        _set_dropout(model, False)
        model.train(was_training)
    return UnetSignals(
        entropy=np.concatenate(entropy).astype(np.float64),
        mutual_information=np.concatenate(information).astype(np.float64),
        features=np.concatenate(features).astype(np.float32),
        foreground=np.concatenate(foreground).astype(np.float64),
    )


def _set_dropout(model: nn.Module, active: bool) -> None:
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.train(active)
