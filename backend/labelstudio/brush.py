"""Masks ⇄ Label Studio results, and the segmentation control found in a labelling config.

Brush results use Label Studio's own RLE (a bit-packed RGBA stream, not COCO RLE), encoded and
decoded by ``label_studio_sdk.converter.brush``; polygon results hold each outer contour as
vertices in percent of the image size.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from label_studio_sdk.converter.brush import decode_rle, mask2rle
from label_studio_sdk.label_interface import LabelInterface

from sugfw.errors import InvalidInputError, SugfwError

SEGMENTATION_TAGS = {"BrushLabels": "brushlabels", "PolygonLabels": "polygonlabels"}
PROMPT_TAGS = {
    "RectangleLabels": "rectanglelabels",
    "Rectangle": "rectangle",
    "KeyPointLabels": "keypointlabels",
    "KeyPoint": "keypoint",
}
"""Controls whose drawn regions can prompt the model (a box, or points) in interactive mode."""


class LabelConfigError(SugfwError, ValueError):
    """A labelling config this backend cannot predict for."""


@dataclass(frozen=True)
class SegmentationControl:
    """The control tag that predictions fill in, and the image it labels."""

    from_name: str
    to_name: str
    result_type: str
    """"brushlabels" or "polygonlabels"."""
    image_key: str
    """Key of the image URL in ``task["data"]`` (``$image`` → ``image``)."""
    labels: tuple[str, ...]


@dataclass(frozen=True)
class PromptControl:
    """A box or keypoint control whose regions are prompts for the model (interactive mode)."""

    from_name: str
    to_name: str
    result_type: str
    """"rectanglelabels", "rectangle", "keypointlabels" or "keypoint" (a result item's type)."""
    labels: tuple[str, ...]
    smart: bool
    """Whether the tag offers Label Studio's smart tool (``smart`` or ``smartOnly``), which sends
    each drawn region to the backend."""

    @property
    def kind(self) -> str:
        """ "box" or "point"."""
        return "box" if self.result_type.startswith("rectangle") else "point"


def _interface(label_config: str) -> LabelInterface:
    try:
        return LabelInterface(label_config)
    except Exception as error:  # the SDK raises bare Exception subclasses for XML errors
        raise LabelConfigError(f"labelling config is not valid XML: {error}") from error


def parse_prompt_controls(label_config: str) -> tuple[PromptControl, ...]:
    """The box and keypoint controls of ``label_config`` (in config order), each on an Image.

    Does not require a brush tag: ``parse_label_config`` says what a prompt's mask is drawn with.
    """
    controls = []
    for control in _interface(label_config).controls:
        if control.tag not in PROMPT_TAGS:
            continue
        attrs = getattr(control, "attr", None) or {}
        smart = any(str(attrs.get(key, "")).lower() == "true" for key in ("smart", "smartOnly"))
        controls.append(
            PromptControl(
                from_name=control.name,
                to_name=control.to_name[0] if control.to_name else "",
                result_type=PROMPT_TAGS[control.tag],
                labels=tuple(control.labels or ()),
                smart=smart,
            )
        )
    return tuple(controls)


def parse_label_config(label_config: str) -> SegmentationControl:
    """The first BrushLabels (else PolygonLabels) control of ``label_config`` and its Image."""
    interface = _interface(label_config)
    controls = [control for control in interface.controls if control.tag in SEGMENTATION_TAGS]
    if not controls:
        found = ", ".join(sorted({control.tag for control in interface.controls})) or "none"
        raise LabelConfigError(
            "labelling config has no BrushLabels or PolygonLabels tag (control tags found: "
            f"{found}); "
            "this backend predicts segmentation masks: see label_config.xml for a working config"
        )
    control = min(controls, key=lambda item: list(SEGMENTATION_TAGS).index(item.tag))
    if not control.labels:
        raise LabelConfigError(
            f"<{control.tag} name={control.name!r}> has no <Label> children; add at least one label"
        )
    image = next((obj for obj in interface.objects if obj.name in control.to_name), None)
    if image is None or image.tag != "Image":
        raise LabelConfigError(
            f"<{control.tag} name={control.name!r}> labels {control.to_name}, which is not an "
            "<Image> tag"
        )
    if not image.value_is_variable:
        raise LabelConfigError(
            f"<Image name={image.name!r}> has value={image.value!r}; expected a task field such as "
            "$image"
        )
    return SegmentationControl(
        from_name=control.name,
        to_name=image.name,
        result_type=SEGMENTATION_TAGS[control.tag],
        image_key=image.value_name,
        labels=tuple(control.labels),
    )


def mask_to_result(
    mask: np.ndarray, control: SegmentationControl, label: str | None = None
) -> list[dict[str, Any]]:
    """Result items drawing ``mask`` (bool H×W) with ``label`` (default: the control's first)."""
    mask = np.asarray(mask)
    if mask.ndim != 2 or mask.dtype != bool:
        raise InvalidInputError(
            f"mask of shape {mask.shape} and dtype {mask.dtype}: expected a 2-D bool array"
        )
    label = control.labels[0] if label is None else label
    if label not in control.labels:
        raise LabelConfigError(
            f"label {label!r} is not one of {control.from_name!r}'s labels {list(control.labels)}"
        )
    height, width = mask.shape
    common = {
        "from_name": control.from_name,
        "to_name": control.to_name,
        "type": control.result_type,
        "original_width": width,
        "original_height": height,
        "image_rotation": 0,
    }
    if control.result_type == "brushlabels":
        # 0/255, not 0/1: the RLE carries RGBA bytes and 1/255 opacity renders as nearly invisible.
        rle = mask2rle(mask.astype(np.uint8) * 255)
        return [{**common, "value": {"format": "rle", "rle": rle, "brushlabels": [label]}}]
    return [
        {**common, "value": {"points": points, "closed": True, "polygonlabels": [label]}}
        for points in _outer_polygons(mask)
    ]


MAX_POLYGON_POINTS = 100_000
"""Vertices one polygon result may hold (Label Studio's editor draws hundreds at most)."""
MAX_RESULT_PIXELS = 100_000_000
"""Without the image's size at hand, the most pixels a result item may declare."""
_RLE_HEADER_BYTES = 4
_RLE_MAX_BITS_PER_VALUE = 27
"""A Label Studio RLE spends at most 1 + 2 + 16 bits of run header and 8 bits of value on one
value: a longer stream than that cannot be an honest encoding of the declared size."""


def result_to_mask(item: dict[str, Any], shape: tuple[int, int] | None = None) -> np.ndarray:
    """The bool H×W mask one brush or polygon result item draws.

    Annotations are user input: every size is checked before anything is allocated. With
    ``shape`` (the task's image), the item must declare exactly that size; without it, at most
    ``MAX_RESULT_PIXELS``. Any malformed item is an ``InvalidInputError`` saying what is wrong.
    """
    if not isinstance(item, Mapping):
        raise InvalidInputError(f"result item is {type(item).__name__}; expected an object")
    height = _dimension(item.get("original_height"), "original_height")
    width = _dimension(item.get("original_width"), "original_width")
    value = item.get("value")
    if not isinstance(value, Mapping):
        raise InvalidInputError(
            f"result item's value is {type(value).__name__}; expected an object"
        )
    if shape is not None and (height, width) != tuple(shape):
        raise InvalidInputError(
            f"result item of size {(height, width)} on an image of size {tuple(shape)}"
        )
    if height * width > MAX_RESULT_PIXELS:
        raise InvalidInputError(
            f"result item declares {height}×{width} pixels, more than {MAX_RESULT_PIXELS}"
        )
    if item.get("type") == "polygonlabels" or "points" in value:
        return _fill_polygon(value.get("points", []), height, width)
    if value.get("format", "rle") != "rle" or "rle" not in value:
        raise InvalidInputError(
            f"brush result has format {value.get('format')!r}; expected 'rle' with an 'rle' list"
        )
    rle = _rle_bytes(value["rle"], height, width)
    try:
        decoded = decode_rle(rle)
    except Exception as error:  # the SDK's decoder raises whatever a bad stream trips on
        raise InvalidInputError(
            f"brush RLE cannot be decoded ({type(error).__name__}: {str(error)[:80]})"
        ) from None
    if decoded.size != height * width * 4:
        raise InvalidInputError(
            f"brush RLE decodes to {decoded.size} values; expected {height}×{width}×4 = "
            f"{height * width * 4}"
        )
    return decoded.reshape(height, width, 4)[..., 3] > 0


def _dimension(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidInputError(f"result item's {key} is {str(value)[:40]!r}; expected a number")
    if not (isinstance(value, int) or (math.isfinite(value) and value == int(value))):
        raise InvalidInputError(f"result item's {key} is {value}; expected a whole number")
    if not 1 <= value <= MAX_RESULT_PIXELS:
        raise InvalidInputError(f"result item's {key} is {str(value)[:40]}; out of range")
    return int(value)


def _rle_bytes(rle: Any, height: int, width: int) -> np.ndarray:
    """The RLE stream as uint8, refused unless its header declares the item's height × width × 4
    values and its length could encode them: ``decode_rle`` allocates whatever the header
    declares."""
    values = height * width * 4
    if not isinstance(rle, list):
        raise InvalidInputError(f"brush RLE is {type(rle).__name__}; expected a list of bytes")
    limit = _RLE_HEADER_BYTES + 1 + values * _RLE_MAX_BITS_PER_VALUE // 8
    if not _RLE_HEADER_BYTES < len(rle) <= limit:
        raise InvalidInputError(f"brush RLE of {len(rle)} bytes cannot encode {values} values")
    if not all(type(byte) is int and 0 <= byte <= 255 for byte in rle):
        raise InvalidInputError("brush RLE holds something other than integers 0-255")
    stream = np.asarray(rle, dtype=np.uint8)
    declared = int.from_bytes(stream[:_RLE_HEADER_BYTES].tobytes(), "big")
    if declared != values:
        raise InvalidInputError(
            f"brush RLE decodes to {declared} values; expected {height}×{width}×4 = {values}"
        )
    return stream


def _outer_polygons(mask: np.ndarray) -> list[list[list[float]]]:
    height, width = mask.shape
    # Outer contours only: a polygon result cannot express holes.
    contours, _ = cv2.findContours(
        mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
    )
    polygons = []
    for contour in contours:
        if len(contour) < 3:
            continue  # a one- or two-pixel sliver is not a polygon
        polygons.append(
            [[100.0 * x / width, 100.0 * y / height] for x, y in contour[:, 0, :].tolist()]
        )
    return polygons


def _fill_polygon(points: Any, height: int, width: int) -> np.ndarray:
    if not isinstance(points, list):
        raise InvalidInputError(f"polygon points are {type(points).__name__}; expected a list")
    if len(points) > MAX_POLYGON_POINTS:
        raise InvalidInputError(
            f"polygon of {len(points)} points; at most {MAX_POLYGON_POINTS} are accepted"
        )
    if not all(
        isinstance(point, list)
        and len(point) == 2
        and all(type(c) in (int, float) and math.isfinite(c) for c in point)
        for point in points
    ):
        raise InvalidInputError("polygon points must be [x, y] pairs of finite numbers (percent)")
    canvas = np.zeros((height, width), dtype=np.uint8)
    if len(points) >= 3:
        # Percent of the image; a vertex beyond the edge is drawn on it (int32 cannot hold 1e308).
        percent = np.clip(np.asarray(points, dtype=np.float64), 0.0, 100.0)
        vertices = np.rint(percent * [width / 100.0, height / 100.0]).astype(np.int32)
        cv2.fillPoly(canvas, [vertices], 1)
    return canvas.astype(bool)
