"""Prompted masks on a slice: embed the slice once, answer many prompts.

What ``segment_anything.SamPredictor`` is to SAM, for every ``SegmenterModel`` here: a slice's
image embedding is kept in a small LRU cache keyed by its content hash, so that a second box on
the same slice runs only the prompt encoder and mask decoder (milliseconds), not the image
encoder. Prompts are in the slice's pixel indices; a prompt that cannot be used on the slice is a
``PromptError``.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch

from sugfw.data import validate_slice
from sugfw.errors import SugfwError
from sugfw.everything import logits_to_slice
from sugfw.intensity import scale_intensities
from sugfw.models.base import CanvasGeometry, SegmenterModel
from sugfw.records import content_hash

log = logging.getLogger(__name__)

DEFAULT_CACHE_SLICES = 16
"""Embeddings kept: 4 MB each (256 × 64 × 64 float32) for LiteMedSAM and SAM alike."""


class PromptError(SugfwError, ValueError):
    """A drawn region that cannot prompt the model (malformed, outside the image, zero area)."""


@dataclass(frozen=True)
class Prompt:
    """One interaction in the slice's pixel indices (pixel i spans [i, i + 1); SAM's prompt
    encoder adds the half pixel itself)."""

    box: tuple[float, float, float, float] | None
    """x0, y0, x1, y1 of the first and last pixel covered (inclusive), or None."""
    points: tuple[tuple[float, float], ...] = ()
    point_labels: tuple[int, ...] = ()
    """1 foreground, 0 background, one per point."""
    label: str | None = None
    """The label the region was drawn with (``value.rectanglelabels[0]`` ...), if any."""


def bounding_box(mask: np.ndarray, margin: int = 0) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) pixel box around a non-empty mask (first and last covered pixel), widened
    by ``margin`` and clipped to the slice: the box an annotator would draw around a structure."""
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        raise PromptError("an empty mask has no bounding box")
    height, width = mask.shape
    return (
        float(max(cols.min() - margin, 0)),
        float(max(rows.min() - margin, 0)),
        float(min(cols.max() + margin, width - 1)),
        float(min(rows.max() + margin, height - 1)),
    )


@dataclass(frozen=True)
class Embedded:
    embedding: torch.Tensor
    """(1, C, 64, 64) image embedding on the model's device."""
    geometry: CanvasGeometry


class EmbeddingCache:
    """Least-recently-used map content hash → ``Embedded``, safe across request threads."""

    def __init__(self, capacity: int = DEFAULT_CACHE_SLICES) -> None:
        self.capacity = max(int(capacity), 0)
        self._items: OrderedDict[str, Embedded] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: str, count: bool = True) -> Embedded | None:
        """The entry for ``key`` (now the most recent), or None; ``count=False`` leaves the
        hit/miss counts alone (a re-check)."""
        with self._lock:
            item = self._items.get(key)
            if item is not None:
                self._items.move_to_end(key)
            if count:
                self.hits, self.misses = (
                    self.hits + (item is not None),
                    self.misses + (item is None),
                )
            return item

    def put(self, key: str, item: Embedded) -> None:
        with self._lock:
            if self.capacity == 0:
                return
            self._items[key] = item
            self._items.move_to_end(key)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


class PromptSegmenter:
    """Prompted masks on slices, with the scorer's intensity window and an embedding cache."""

    def __init__(
        self,
        model: SegmenterModel,
        intensity_percentiles: tuple[float, float],
        cache: EmbeddingCache | None = None,
    ) -> None:
        self.model = model
        self.intensity_percentiles = intensity_percentiles
        self.cache = cache if cache is not None else EmbeddingCache()
        self._encode_lock = threading.Lock()  # two boxes at once would only compete for the CPU

    def embed(self, image: np.ndarray) -> Embedded:
        """The slice's embedding, from the cache when this slice's pixels were embedded before."""
        image = validate_slice(image, "slice")
        key = content_hash(image)
        cached = self.cache.get(key)
        if cached is not None:
            return cached
        model = self.model
        with self._encode_lock:
            cached = self.cache.get(key, count=False)  # embedded by a concurrent request meanwhile
            if cached is not None:
                return cached
            scaled = torch.from_numpy(scale_intensities(image, self.intensity_percentiles))
            geometry = CanvasGeometry.fit(*image.shape, model.canvas_size)
            embedding = model.encode(model.prepare([scaled], [geometry]))
            item = Embedded(embedding, geometry)
            self.cache.put(key, item)
            return item

    def mask(self, image: np.ndarray, prompt: Prompt) -> np.ndarray:
        """The model's (H, W) bool mask for ``prompt`` on ``image``.

        One point alone is ambiguous: three masks are decoded and the one of highest predicted IoU
        kept (SAM's advice); a box, or several points, give one mask.
        """
        model = self.model
        points = prompt.points
        if points and "points" not in model.prompt_kinds:
            if prompt.box is None:
                raise PromptError(f"{model.name} takes box prompts only; draw a box")
            log.info("%s takes box prompts only: the keypoints are ignored", model.name)
            points = ()
        embedded = self.embed(image)
        geometry = embedded.geometry
        # SAM's ResizeLongestSide maps coordinates by the resized content size per axis.
        sx = geometry.content_width / geometry.width
        sy = geometry.content_height / geometry.height
        box = None
        if prompt.box is not None:
            x0, y0, x1, y1 = prompt.box
            box = torch.tensor([x0 * sx, y0 * sy, x1 * sx, y1 * sy])
        coords = labels = None
        if points:
            coords = torch.tensor([[x * sx, y * sy] for x, y in points])
            labels = torch.tensor(prompt.point_labels[: len(points)])
        multimask = box is None and len(points) == 1
        logits, iou = model.decode_prompt(embedded.embedding, box, coords, labels, multimask)
        best = int(iou.float().argmax())
        with torch.inference_mode():
            on_slice = logits_to_slice(logits[best : best + 1], geometry)[0]
        return (on_slice > model.mask_threshold).cpu().numpy()
