"""The per-slice record that scoring produces and selection, training and the backend consume."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np


@dataclass
class SliceRecord:
    slice_id: str
    content_hash: str
    features_pgdr: np.ndarray
    """(256,) float32: uncertainty-weighted patch feature F̂ (Eq. 4)."""
    features_mean: np.ndarray
    """(256,) float32: plain mean of the patch features (the "without PGDR" ablation)."""
    uncertainty: float
    """Û: mean of the uncertainty map (Eq. 5)."""
    union_mask: np.ndarray
    """(H, W) bool: everything-mode union on the un-augmented slice (the pre-annotation)."""
    uncertainty_map: np.ndarray
    """(H, W) float16: U (Eq. 3) at the slice's resolution."""
    masks_kept: int
    """Number of masks in ``union_mask``."""


def content_hash(image: np.ndarray) -> str:
    """Identity of a slice's pixels: same pixels, same hash, whatever the file or batch."""
    array = np.ascontiguousarray(image, dtype=np.float32)
    digest = hashlib.sha256(str(array.shape).encode())
    digest.update(array.tobytes())
    return digest.hexdigest()


def slice_seed(base_seed: int, image_hash: str) -> int:
    """Per-slice augmentation seed, so a slice's record does not depend on its batch or position."""
    return int(hashlib.sha256(f"{base_seed}:{image_hash}".encode()).hexdigest()[:15], 16)
