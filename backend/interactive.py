"""Interactive mode: a box (or points) drawn in the labelling page → the model's mask for it.

With the ML backend connected for interactive pre-annotations, Label Studio posts each region drawn
with a smart tool to ``/predict`` as ``params.context = {"result": [region, ...]}``: a
``rectanglelabels`` region holds ``x``, ``y``, ``width``, ``height`` (and ``rotation``) in percent
of the image, a ``keypointlabels`` region ``x``, ``y`` (and ``is_positive``). The answer is one
brush region of the config's brush control, under the box's label when the brush control has it.

A slice's image embedding is kept in a small LRU cache keyed by its content hash, so that a second
box on the same slice runs only the prompt encoder and mask decoder (milliseconds), not the image
encoder. A malformed context (a region whose type or numbers are of the wrong kind or out of
range, more than ``max_points`` keypoints) is a ``MalformedPromptError``, which ``/predict``
answers with a 400 naming the problem, before any image is fetched. A well-formed prompt that
cannot be used on this image (outside it, zero area) is a ``PromptError``: an empty prediction
and a log line that names the problem, never the context.
"""

from __future__ import annotations

import logging
import math
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from backend.labelstudio.brush import (
    PROMPT_TAGS,
    SegmentationControl,
    mask_to_result,
    parse_label_config,
)
from backend.labelstudio.prefill import prefill_prediction
from backend.server.request_checks import RequestError
from sugfw.data import validate_slice
from sugfw.errors import SugfwError
from sugfw.everything import logits_to_slice
from sugfw.intensity import scale_intensities
from sugfw.models.base import CanvasGeometry, SegmenterModel
from sugfw.records import content_hash

if TYPE_CHECKING:
    from backend.jobs.slice_scorer import SliceScorer
    from backend.labelstudio.images import ImageFetcher

log = logging.getLogger(__name__)

DEFAULT_MAX_POINTS = 64
"""Keypoints one prompt may carry (SUGFW_INTERACTIVE_MAX_POINTS)."""
PERCENT_SLACK = 100.0
"""How far beyond the image (in percent of its size) a coordinate may lie and still be a region
Label Studio could have drawn; anything further is malformed, not merely outside."""
MAX_ROTATION = 360.0
DEFAULT_CACHE_SLICES = 16
"""Embeddings kept: 4 MB each (256 × 64 × 64 float32) for LiteMedSAM and SAM alike."""
BOX_TYPES = frozenset(kind for kind in PROMPT_TAGS.values() if kind.startswith("rectangle"))
POINT_TYPES = frozenset(kind for kind in PROMPT_TAGS.values() if kind.startswith("keypoint"))


class PromptError(SugfwError, ValueError):
    """A drawn region that cannot prompt the model (malformed, outside the image, zero area)."""


class MalformedPromptError(PromptError, RequestError):
    """A context that is not what Label Studio sends: the request is refused with a 400."""


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


def context_regions(context: Any) -> list[Any] | None:
    """The drawn regions of an interactive ``context``; None when it is not an interactive call
    (no context, or one without a ``result`` key)."""
    if context is None:
        return None
    if not isinstance(context, Mapping):
        raise MalformedPromptError(f"context is {type(context).__name__}; expected an object")
    if "result" not in context:
        return None
    regions = context["result"]
    if not isinstance(regions, list):
        raise MalformedPromptError(f"context 'result' is {type(regions).__name__}; expected a list")
    return regions


def check_regions(regions: Sequence[Any], max_points: int = DEFAULT_MAX_POINTS) -> None:
    """MalformedPromptError unless every prompt region is well formed and there are at most
    ``max_points`` keypoints; checked before the image is fetched. Whether the prompt lands on
    the image is decided later, on the image's own size."""
    kinds = (region.get("type") for region in regions if isinstance(region, Mapping))
    points = sum(1 for kind in kinds if isinstance(kind, str) and kind in POINT_TYPES)
    if points > max_points:
        raise MalformedPromptError(
            f"context holds {points} keypoints; at most {max_points} are accepted "
            "(SUGFW_INTERACTIVE_MAX_POINTS)"
        )
    try:
        parse_prompt(regions, 100, 100)
    except MalformedPromptError:
        raise
    except PromptError:
        pass  # well formed; unusable on this image is answered later with an empty prediction


def parse_prompt(regions: Sequence[Any], height: int, width: int) -> Prompt:
    """The prompt that ``regions`` (Label Studio result items, percent of the image) draw on a
    ``height`` × ``width`` slice: the last box, and every keypoint.

    Regions of other types (a brush stroke, a choice) are ignored; none left is a PromptError.
    """
    box, label = None, None
    points: list[tuple[float, float]] = []
    point_labels: list[int] = []
    for index, region in enumerate(regions):
        kind = region.get("type") if isinstance(region, Mapping) else None
        if kind is not None and not isinstance(kind, str):
            raise MalformedPromptError(
                f"region {index}: type is {type(kind).__name__}; expected a string"
            )
        if kind not in BOX_TYPES and kind not in POINT_TYPES:
            continue
        value = region.get("value")
        if not isinstance(value, Mapping):
            raise MalformedPromptError(f"region {index} ({kind}) has no 'value' object")
        named = value.get(kind)
        region_label = named[0] if isinstance(named, list) and named else None
        if kind in BOX_TYPES:
            box = _box_pixels(value, height, width, index)
            label = region_label if region_label is not None else label
        else:
            points.append(_point_pixels(value, height, width, index))
            point_labels.append(0 if region.get("is_positive") is False else 1)
            label = label if label is not None else region_label
    if box is None and not points:
        raise PromptError("context holds no rectangle or keypoint region to prompt with")
    return Prompt(box, tuple(points), tuple(point_labels), label)


def _number(value: Mapping[str, Any], key: str, index: int, low: float, high: float) -> float:
    """``value[key]`` as a float in [``low``, ``high``] (percent, or degrees for rotation)."""
    number = value.get(key, 0.0 if key == "rotation" else None)
    shown = repr(number) if len(repr(number)) <= 40 else repr(number)[:37] + "..."
    if isinstance(number, bool) or not isinstance(number, (int, float)):
        raise MalformedPromptError(f"region {index}: value.{key} is {shown}; expected a number")
    try:
        number = float(number)  # a 400-digit integer does not fit
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise MalformedPromptError(
            f"region {index}: value.{key} is {shown}; expected a finite number"
        )
    if not low <= number <= high:
        raise MalformedPromptError(
            f"region {index}: value.{key} is {shown}; expected a number in [{low:g}, {high:g}]"
        )
    return number


def _percent(value: Mapping[str, Any], key: str, index: int) -> float:
    return _number(value, key, index, -PERCENT_SLACK, 100.0 + PERCENT_SLACK)


def _box_pixels(
    value: Mapping[str, Any], height: int, width: int, index: int
) -> tuple[float, float, float, float]:
    x, y = _percent(value, "x", index), _percent(value, "y", index)
    w, h = _percent(value, "width", index), _percent(value, "height", index)
    if w <= 0 or h <= 0:
        raise PromptError(f"region {index}: box of width {w}% and height {h}% has no area")
    # Percent → pixel edges; a rotated box (Label Studio turns it about its top-left corner,
    # clockwise on screen) prompts with its axis-aligned bounds.
    left, top, w_px, h_px = x * width / 100, y * height / 100, w * width / 100, h * height / 100
    angle = math.radians(_number(value, "rotation", index, -MAX_ROTATION, MAX_ROTATION))
    cos, sin = math.cos(angle), math.sin(angle)
    xs = [left + cx * cos - cy * sin for cx, cy in ((0, 0), (w_px, 0), (w_px, h_px), (0, h_px))]
    ys = [top + cx * sin + cy * cos for cx, cy in ((0, 0), (w_px, 0), (w_px, h_px), (0, h_px))]
    x0, x1 = max(min(xs), 0.0), min(max(xs), float(width))
    y0, y1 = max(min(ys), 0.0), min(max(ys), float(height))
    if x1 <= x0 or y1 <= y0:
        raise PromptError(
            f"region {index}: box at x={x}%, y={y}% ({w}% × {h}%) lies outside the image"
        )
    # Edges → indices of the first and last pixel covered (a sub-pixel box covers one pixel).
    return x0, y0, max(x1 - 1.0, x0), max(y1 - 1.0, y0)


def _point_pixels(
    value: Mapping[str, Any], height: int, width: int, index: int
) -> tuple[float, float]:
    x, y = _percent(value, "x", index), _percent(value, "y", index)
    if not (0 <= x <= 100 and 0 <= y <= 100):
        raise PromptError(f"region {index}: keypoint at x={x}%, y={y}% lies outside the image")
    # A click at position c (pixel edges) lies in pixel c - 0.5 (centre indices).
    px = min(max(x * width / 100 - 0.5, 0.0), width - 1.0)
    py = min(max(y * height / 100 - 0.5, 0.0), height - 1.0)
    return px, py


# -- embeddings and masks ---------------------------------------------------------------------


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


# -- the backend's side ------------------------------------------------------------------------


class InteractivePredictor:
    """Answers an interactive /predict for one task, with the backend's loaded scoring model."""

    def __init__(self, scorer: SliceScorer, cache_slices: int = DEFAULT_CACHE_SLICES) -> None:
        self.scorer = scorer
        self.cache = EmbeddingCache(cache_slices)
        self._segmenter: PromptSegmenter | None = None
        self._lock = threading.Lock()

    @property
    def segmenter(self) -> PromptSegmenter:
        """Built on first use over the scorer's own model (loaded once, shared with scoring)."""
        with self._lock:
            if self._segmenter is None:
                library = self.scorer.scorer
                self._segmenter = PromptSegmenter(
                    library.model, library.settings.intensity_percentiles, self.cache
                )
            return self._segmenter

    def predict(
        self,
        task: Mapping[str, Any],
        regions: Sequence[Any],
        label_config: str,
        fetcher: Callable[[], ImageFetcher],
        model_version: str,
    ) -> dict[str, Any] | None:
        """The brush prediction for the prompt ``regions`` draw on ``task``'s image, or None when
        there is nothing usable (logged). A config without a brush tag raises LabelConfigError."""
        control = parse_label_config(label_config)
        task_id = task.get("id")
        try:
            # Built here, inside the try: an expired key is refused when the fetcher is made.
            image_fetcher = fetcher()
        except SugfwError as error:
            log.warning("interactive prompt on task %s: no image: %s", task_id, error)
            return None
        try:
            image = image_fetcher.fetch(task, control.image_key)
        except SugfwError as error:
            log.warning("interactive prompt on task %s: no image: %s", task_id, error)
            return None
        finally:
            image_fetcher.close()
        try:
            prompt = parse_prompt(regions, *np.shape(image)[:2])
            mask = self.segmenter.mask(image, prompt)
        except SugfwError as error:  # a PromptError, or a slice the model cannot take
            log.warning("interactive prompt on task %s refused: %s", task_id, error)
            return None
        result = mask_to_result(mask, control, brush_label(control, prompt.label))
        for item in result:
            item["id"] = uuid.uuid4().hex[:10]  # Label Studio keys regions by id
        return prefill_prediction(result, model_version, None)


def brush_label(control: SegmentationControl, label: str | None) -> str:
    """``label`` when the brush control has it, else the brush control's first label."""
    return label if label in control.labels else control.labels[0]
