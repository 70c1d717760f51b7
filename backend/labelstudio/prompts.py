"""Label Studio's interactive prompts: the regions drawn with a smart tool, as a model prompt.

With the ML backend connected for interactive pre-annotations, Label Studio posts each region drawn
with a smart tool to ``/predict`` as ``params.context = {"result": [region, ...]}``: a
``rectanglelabels`` region holds ``x``, ``y``, ``width``, ``height`` (and ``rotation``) in percent
of the image, a ``keypointlabels`` region ``x``, ``y`` (and ``is_positive``).

A malformed context (a region whose type or numbers are of the wrong kind or out of range, more
than ``max_points`` keypoints) is a ``MalformedPromptError``, which ``/predict`` answers with a 400
naming the problem, before any image is fetched. A well-formed prompt that cannot be used on this
image (outside it, zero area) is a ``PromptError``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from backend.labelstudio.brush import PROMPT_TAGS
from sugfw.prompting import Prompt, PromptError

DEFAULT_MAX_POINTS = 64
"""Keypoints one prompt may carry (SUGFW_INTERACTIVE_MAX_POINTS)."""
PERCENT_SLACK = 100.0
"""How far beyond the image (in percent of its size) a coordinate may lie and still be a region
Label Studio could have drawn; anything further is malformed, not merely outside."""
MAX_ROTATION = 360.0
BOX_TYPES = frozenset(kind for kind in PROMPT_TAGS.values() if kind.startswith("rectangle"))
POINT_TYPES = frozenset(kind for kind in PROMPT_TAGS.values() if kind.startswith("keypoint"))


class MalformedPromptError(PromptError):
    """A context that is not what Label Studio sends: the request is refused with ``status``."""

    status = 400


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
