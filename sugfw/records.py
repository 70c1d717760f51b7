"""The per-slice record that scoring produces and selection, training and the backend consume."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from sugfw.atomic import atomic_path

REGION_CAP = 8
"""Most kept masks a record holds as separate regions (the largest). Eight fit one bit each in a
uint8 per pixel, so a record's regions cost what its union mask costs (in memory, in the cache and
across Ray), whatever the count; and past a handful, deleting wrong regions one by one in Label
Studio is slower for the annotator than drawing the structure."""


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
    content: float = float("nan")
    """Central brightness of the slice as given (``sugfw.content``); read from the pixels on every
    scoring and cached with the record, so a record answered from the cache alone has it too; NaN
    where unknown (a cache entry written before it existed, until its pixels are read again)."""
    region_bits: np.ndarray | None = None
    """(H, W) uint8: bit i is set where region i covers the pixel; the regions are the (at most
    ``REGION_CAP``) largest kept masks of the un-augmented slice, largest first, each as drawn
    (they may overlap). ``regions()`` unpacks them. Their OR is ``union_mask`` when
    ``masks_kept <= REGION_CAP``, part of it otherwise. Pre-annotation only: scoring, U and
    selection use the union. Not given (records from before regions existed): the union as the
    single region."""

    def __post_init__(self) -> None:
        if self.region_bits is None and self.union_mask is not None:
            self.region_bits = pack_regions(np.asarray(self.union_mask, dtype=bool)[None])

    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__(name, value)
        # The regions are parts of the union: code that drops the union to save memory (scoring
        # streams, the Ray pool, the backend job) drops them with it, one byte per pixel each.
        if name == "union_mask" and value is None and "region_bits" in self.__dict__:
            super().__setattr__("region_bits", None)

    def regions(self) -> np.ndarray:
        """(M, H, W) bool: the record's regions, largest first (M = 0 for an empty union)."""
        if self.region_bits is None:
            raise ValueError(f"record {self.slice_id!r} carries no masks (dropped to save memory)")
        return unpack_regions(self.region_bits)


def pack_regions(masks: np.ndarray) -> np.ndarray:
    """(M, H, W) bool, M <= ``REGION_CAP`` → (H, W) uint8 with bit i = mask i."""
    masks = np.asarray(masks, dtype=bool)
    if masks.ndim != 3 or len(masks) > REGION_CAP:
        raise ValueError(f"regions of shape {masks.shape}: expected (M <= {REGION_CAP}, H, W)")
    bits = np.zeros(masks.shape[1:], dtype=np.uint8)
    for i, mask in enumerate(masks):
        bits |= mask.astype(np.uint8) << i
    return bits


def unpack_regions(bits: np.ndarray) -> np.ndarray:
    """Inverse of ``pack_regions``, without trailing empty regions (largest first, so an empty
    one is last: it draws nothing)."""
    bits = np.asarray(bits, dtype=np.uint8)
    count = int(bits.max()).bit_length() if bits.size else 0  # highest bit set anywhere, + 1
    masks = np.zeros((count, *bits.shape), dtype=bool)
    for i in range(count):
        masks[i] = (bits >> i) & 1
    return masks


def content_hash(image: np.ndarray) -> str:
    """Identity of a slice's pixels: same pixels, same hash, whatever the file or batch."""
    array = np.ascontiguousarray(image, dtype=np.float32)
    digest = hashlib.sha256(str(array.shape).encode())
    digest.update(array.tobytes())
    return digest.hexdigest()


def slice_seed(base_seed: int, image_hash: str) -> int:
    """Per-slice augmentation seed, so a slice's record does not depend on its batch or position."""
    return int(hashlib.sha256(f"{base_seed}:{image_hash}".encode()).hexdigest()[:15], 16)


@dataclass
class RecordIndex:
    """What selection needs of a scored folder: one row per slice, in scoring order."""

    slice_ids: np.ndarray
    case_ids: np.ndarray
    slice_indices: np.ndarray
    content_hashes: np.ndarray
    features_pgdr: np.ndarray
    features_mean: np.ndarray
    uncertainty: np.ndarray
    content: np.ndarray | None = None
    """(N,) float64 central brightness (``sugfw.content``); NaN where unknown."""

    def __post_init__(self) -> None:
        if self.content is None:
            self.content = np.full(len(self.slice_ids), np.nan)

    @classmethod
    def from_records(
        cls,
        records: Sequence[SliceRecord],
        case_ids: Sequence[str] | None = None,
        slice_indices: Sequence[int] | None = None,
    ) -> RecordIndex:
        """Stack ``records``; case ids and slice indices default to "" and 0 (not known)."""
        case_ids = [""] * len(records) if case_ids is None else case_ids
        slice_indices = [0] * len(records) if slice_indices is None else slice_indices
        return cls(
            slice_ids=np.array([r.slice_id for r in records]),
            case_ids=np.array(case_ids),
            slice_indices=np.array(slice_indices, dtype=np.int64),
            content_hashes=np.array([r.content_hash for r in records]),
            features_pgdr=np.stack([r.features_pgdr for r in records]).astype(np.float32),
            features_mean=np.stack([r.features_mean for r in records]).astype(np.float32),
            uncertainty=np.array([r.uncertainty for r in records], dtype=np.float64),
            content=np.array([r.content for r in records], dtype=np.float64),
        )

    def features(self, kind: str) -> np.ndarray:
        return self.features_pgdr if kind == "pgdr" else self.features_mean

    def subset(self, positions: np.ndarray) -> RecordIndex:
        """The rows at ``positions``, in that order."""
        positions = np.asarray(positions, dtype=np.int64)
        return RecordIndex(**{f.name: getattr(self, f.name)[positions] for f in fields(self)})

    def save(self, path: Path) -> None:
        with atomic_path(path) as tmp:
            np.savez_compressed(tmp, **{f.name: getattr(self, f.name) for f in fields(self)})

    @classmethod
    def load(cls, path: Path) -> RecordIndex:
        with np.load(path, allow_pickle=False) as data:
            # Indexes saved before the content column load with it unknown.
            return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data.files})
