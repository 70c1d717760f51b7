"""On-disk cache of slice records, keyed by image content, model and scoring settings.

Each settings combination gets its own folder (named by a hash of the settings, which are also
written there as JSON for people); each slice one ``<content hash>.npz``. Writes go through a
temporary file and an atomic rename, so an interrupted run leaves either a whole record or none,
and a rerun picks up where it stopped.

A cache may be capped (``max_entries``, or the process default of :func:`set_default_max_entries`):
each hit refreshes its entry's modification time, and when a write takes the folder over the cap,
the least recently used entries go until a tenth of the cap is free again (so the folder is
listed once per many writes, not on each).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from dataclasses import fields
from pathlib import Path

import numpy as np

from sugfw.atomic import atomic_path, atomic_write_json, is_temporary
from sugfw.content import central_brightness
from sugfw.records import SliceRecord, pack_regions

log = logging.getLogger(__name__)
_SCALARS = ("slice_id", "content_hash", "uncertainty", "masks_kept", "content")
# Written by every put, but absent from entries written before records kept separate regions
# (region_bits) or their central brightness (content, then NaN: unknown until the pixels are read).
_OPTIONAL = ("region_bits", "content")


_default_max_entries: int | None = None


def set_default_max_entries(max_entries: int | None) -> None:
    """The cap of every cache made without one from now on (None: unbounded)."""
    global _default_max_entries
    _default_max_entries = max_entries


def settings_key(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


class RecordCache:
    def __init__(self, root: Path, settings: dict, max_entries: int | None = None) -> None:
        self.folder = Path(root) / settings_key(settings)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.max_entries = _default_max_entries if max_entries is None else max_entries
        self._count: int | None = None  # entries on disk, counted at the first write
        description = self.folder / "settings.json"
        if not description.exists():
            atomic_write_json(description, settings, indent=2)

    def _path(self, image_hash: str) -> Path:
        return self.folder / f"{image_hash}.npz"

    def get(self, image_hash: str, image: np.ndarray | None = None) -> SliceRecord | None:
        """The cached record, or None. Given the slice's (validated) pixels, an entry written
        before records kept their central brightness gets it from them and is rewritten."""
        record = self._read(image_hash)
        if record is not None and image is not None and not math.isfinite(record.content):
            record.content = central_brightness(image)
            self.put(record)
        return record

    def _read(self, image_hash: str) -> SliceRecord | None:
        path = self._path(image_hash)
        if not path.exists():
            return None
        if self.max_entries is not None:
            try:
                os.utime(path)  # recently used: evicted last
            except OSError:
                return None  # evicted meanwhile
        try:
            with np.load(path, allow_pickle=False) as data:
                values = {
                    f.name: data[f.name]
                    for f in fields(SliceRecord)
                    if f.name in data.files or f.name not in _OPTIONAL
                }
        except Exception as err:  # a damaged cache entry is recomputed, never trusted
            log.warning("discarding unreadable cache entry %s (%s)", path, err)
            path.unlink(missing_ok=True)
            return None
        values["slice_id"] = str(values["slice_id"])
        values["content_hash"] = str(values["content_hash"])
        values["uncertainty"] = float(values["uncertainty"])
        values["masks_kept"] = int(values["masks_kept"])
        values["content"] = float(values.get("content", np.nan))
        if "region_bits" not in values:
            # An entry from before separate regions: its scores are unchanged (SCORING_VERSION
            # stays), so it is not rescored; its pre-annotation is the union as the single region.
            values["region_bits"] = pack_regions(values["union_mask"][None])
        return SliceRecord(**values)

    def put(self, record: SliceRecord) -> None:
        path = self._path(record.content_hash)
        arrays = {
            f.name: getattr(record, f.name) for f in fields(SliceRecord) if f.name not in _SCALARS
        }
        scalars = {name: np.asarray(getattr(record, name)) for name in _SCALARS}
        existed = self.max_entries is not None and path.exists()
        with atomic_path(path) as tmp:
            np.savez_compressed(tmp, **arrays, **scalars)
        if self.max_entries is not None and not existed:
            self._count = len(self) if self._count is None else self._count + 1
            if self._count > self.max_entries:
                self._evict()

    def _evict(self) -> None:
        """Drop the least recently used entries until a tenth of the cap is free."""
        keep = self.max_entries - self.max_entries // 10 if self.max_entries else 0
        entries = []
        for path in self.folder.glob("*.npz"):
            if is_temporary(path):
                continue
            try:
                entries.append((path.stat().st_mtime, path))
            except FileNotFoundError:
                continue
        entries.sort()
        excess = entries[: max(len(entries) - keep, 0)]
        for _, path in excess:
            path.unlink(missing_ok=True)
        self._count = len(entries) - len(excess)
        log.info("score cache %s: %d least recently used entries evicted", self.folder, len(excess))

    def __len__(self) -> int:
        return sum(1 for path in self.folder.glob("*.npz") if not is_temporary(path))
