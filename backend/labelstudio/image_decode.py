"""Task images as slices: only the formats a slice is stored in, checked from the header before
they are decoded (pixel count and aspect ratio), decoded by the same rules as ``sugfw score``."""

from __future__ import annotations

import base64
import binascii
import io
import tempfile
from pathlib import Path, PurePosixPath
from urllib.parse import unquote_to_bytes, urlsplit

import numpy as np
from PIL import Image

from backend.labelstudio.image_policy import ImageFetchError
from sugfw.data import load_image_file
from sugfw.errors import InvalidInputError

MAX_ASPECT_RATIO = 32
"""Longest side / shortest side of a slice: a 256-pixel canvas keeps 8 pixels of the short side."""
SLICE_FORMATS = ("PNG", "JPEG", "TIFF")
"""What Pillow may decode here: its other decoders are attack surface no slice needs."""


def check_pixels(source: bytes | Path, max_pixels: int) -> None:
    """Refuse an image over ``max_pixels`` from its header, before it is decoded."""
    handle = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        with Image.open(handle, formats=SLICE_FORMATS) as image:
            width, height = image.size
    except Image.DecompressionBombError as error:
        raise ImageFetchError(f"too many pixels: {error}; refused") from None
    except Exception:  # Pillow raises many kinds for what it cannot identify
        raise InvalidInputError(f"not a {', '.join(SLICE_FORMATS)} image Pillow can read") from None
    if width * height > max_pixels:
        raise ImageFetchError(f"{width} x {height} pixels, more than {max_pixels}; refused")
    if max(width, height) > MAX_ASPECT_RATIO * max(min(width, height), 1):
        raise ImageFetchError(
            f"{width} x {height} pixels: sides more than {MAX_ASPECT_RATIO} times apart; refused"
        )


def data_url_bytes(url: str) -> bytes:
    header, _, payload = url.partition(",")
    try:
        if header.endswith(";base64"):
            return base64.b64decode(payload, validate=True)
        return unquote_to_bytes(payload)
    except (binascii.Error, ValueError) as error:
        raise ImageFetchError(f"data URL cannot be decoded: {error}") from None


def decode_slice(content: bytes, url: str) -> np.ndarray:
    # Through a file, so downloaded images obey exactly the rules of `sugfw score` (grey modes,
    # bit depth, no alpha); the suffix only helps people reading a leftover temp file.
    suffix = (
        PurePosixPath(urlsplit(url).path).suffix[:10] if not url.startswith("data:") else ".img"
    )
    with tempfile.NamedTemporaryFile(suffix=suffix or ".img") as handle:
        handle.write(content)
        handle.flush()
        try:
            return load_image_file(handle.name)
        except InvalidInputError as error:
            # The temp path means nothing to the user: drop it from the message.
            raise InvalidInputError(str(error).replace(handle.name, "downloaded file")) from None
