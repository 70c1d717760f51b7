"""Turn a folder (or one file) of images into the 2-D slices that get scored.

2-D files (PNG/JPEG/TIFF) give one slice each. NIfTI volumes are cut along their axial axis,
found from the affine rather than assumed to be the last array axis, so every slice shows the
same anatomical plane whatever order the file stores its axes in. Intensities stay raw:
normalisation belongs to whatever consumes the slices.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import nibabel as nib
import numpy as np
from nibabel.affines import voxel_sizes
from nibabel.filebasedimages import ImageFileError
from nibabel.orientations import aff2axcodes
from nibabel.spatialimages import HeaderDataError
from PIL import Image

from sugfw.errors import InvalidInputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
VOLUME_SUFFIXES = (".nii.gz", ".nii")
SUPPORTED_SUFFIXES = IMAGE_SUFFIXES + VOLUME_SUFFIXES
MIN_SIDE = 8
"""Smallest accepted height or width, in pixels."""

# One grey channel each; np.asarray keeps their full bit depth (16-bit stays 0..65535).
_GREY_MODES = frozenset({"L", "I;16", "I;16L", "I;16B", "I;16N", "I", "F"})
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
# What Pillow and nibabel raise for unreadable, truncated or malformed files.
_PILLOW_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    struct.error,
    Image.DecompressionBombError,
)
_NIBABEL_ERRORS = (ImageFileError, HeaderDataError, OSError, EOFError, ValueError, zlib.error)


@dataclass(frozen=True, eq=False)  # eq=False: field-wise == on arrays is ambiguous
class Slice:
    slice_id: str
    """Unique, filesystem-safe id: file stem (2-D files) or ``<case>_z<index:03d>`` (volumes)."""
    image: np.ndarray
    """float32 (H, W), raw intensities, all finite."""
    case_id: str
    """File stem (without .nii/.nii.gz/.png/...)."""
    slice_index: int
    """Index along the slicing axis; 0 for 2-D files."""
    spacing: tuple[float, float, float] | None
    """(row, col, slice) in mm from the NIfTI header; None for PNG/JPEG/TIFF."""
    source: str
    """Path of the file the slice came from."""


class _Volume(NamedTuple):
    data: np.ndarray
    spacing: tuple[float, float, float]
    axis: int
    is_2d: bool


def validate_slice(image: np.ndarray, name: str) -> np.ndarray:
    """Return ``image`` as a C-contiguous float32 2-D array, or raise InvalidInputError.

    A constant image is allowed: a blank slice is valid input, only useless for training.
    """
    array = np.asarray(image)
    if array.ndim != 2:
        raise InvalidInputError(
            f"{name}: expected a 2-D slice (H, W), got an array of shape {array.shape}"
        )
    if array.dtype.kind not in "biuf":
        raise InvalidInputError(f"{name}: expected real-valued pixels, got dtype {array.dtype}")
    if min(array.shape) < MIN_SIDE:
        raise InvalidInputError(
            f"{name}: slice of shape {array.shape} is too small; expected at least "
            f"{MIN_SIDE} pixels on each side"
        )
    with np.errstate(over="ignore"):  # float64 beyond float32 range becomes inf, reported below
        pixels = np.ascontiguousarray(array, dtype=np.float32)
    n_bad = pixels.size - int(np.count_nonzero(np.isfinite(pixels)))
    if n_bad:
        n_nan = int(np.count_nonzero(np.isnan(pixels)))
        raise InvalidInputError(
            f"{name}: {n_bad} non-finite pixel(s) ({n_nan} NaN, {n_bad - n_nan} inf, after "
            f"conversion to float32) out of {pixels.size}; expected finite intensities"
        )
    return pixels


def load_image_file(path: Path | str) -> np.ndarray:
    """Read one greyscale PNG/JPEG/TIFF into a float32 2-D array with its full value range."""
    path = _existing_file(path)
    _refuse_deep_colour_png(path)
    try:
        with Image.open(path) as image:
            image.load()
            n_frames = getattr(image, "n_frames", 1)
            mode = image.mode
            pixels = np.asarray(image)
            palette = image.getpalette() if mode == "P" else None
    except _PILLOW_ERRORS as error:
        raise InvalidInputError(f"cannot read image file {path}: {error}") from error
    if n_frames > 1:
        shape = (n_frames, *pixels.shape)
        raise InvalidInputError(
            f"{path}: {n_frames} frames, a stack of shape {shape}; expected a single 2-D slice"
        )
    return validate_slice(_grey_pixels(pixels, mode, palette, path), str(path))


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_COLOUR_TYPES = {2: "RGB", 4: "grey + alpha", 6: "RGBA"}


def _refuse_deep_colour_png(path: Path) -> None:
    """16-bit colour PNGs are read by Pillow as 8-bit, silently dropping half of every value.

    The IHDR chunk (bytes 24 and 25) gives bit depth and colour type before any decoding.
    """
    with path.open("rb") as handle:
        header = handle.read(26)
    if len(header) < 26 or not header.startswith(_PNG_SIGNATURE) or header[12:16] != b"IHDR":
        return  # not a PNG, or a broken one: Pillow reports it
    depth, colour = header[24], header[25]
    if depth == 16 and colour in _PNG_COLOUR_TYPES:
        raise InvalidInputError(
            f"{path}: 16-bit {_PNG_COLOUR_TYPES[colour]} PNG would lose its low 8 bits when read; "
            "expected a greyscale slice (save it as 16-bit greyscale, mode I;16)"
        )


def _grey_pixels(
    pixels: np.ndarray, mode: str, palette: list[int] | None, path: Path
) -> np.ndarray:
    if mode in _GREY_MODES:
        return pixels
    if mode in _ALPHA_MODES:
        raise InvalidInputError(
            f"{path}: image mode {mode} has an alpha channel; expected a greyscale slice "
            f"(modes {', '.join(sorted(_GREY_MODES))})"
        )
    if mode == "RGB":
        red, green, blue = pixels[..., 0], pixels[..., 1], pixels[..., 2]
        n_colour = int(np.count_nonzero((red != green) | (red != blue)))
        if n_colour:
            raise InvalidInputError(
                f"colour image {path} (mode RGB, channels differ at {n_colour} pixels); "
                "expected a greyscale slice"
            )
        return red
    if mode == "P" and palette is not None:
        return _grey_from_palette(pixels, palette, path)
    raise InvalidInputError(
        f"{path}: unsupported image mode {mode}; expected a greyscale slice "
        f"(modes {', '.join(sorted(_GREY_MODES))}, grey RGB or a grey palette)"
    )


def _grey_from_palette(indices: np.ndarray, palette: list[int], path: Path) -> np.ndarray:
    table = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
    used = np.unique(indices)
    if used.size and used[-1] >= len(table):
        raise InvalidInputError(
            f"{path}: palette index {used[-1]} outside a palette of {len(table)} entries"
        )
    entries = table[used]
    if np.any(entries[:, 0] != entries[:, 1]) or np.any(entries[:, 0] != entries[:, 2]):
        raise InvalidInputError(
            f"colour image {path} (mode P with a colour palette); expected a greyscale slice"
        )
    return table[indices, 0]


def slice_axis(affine: np.ndarray) -> int:
    """The array axis that runs superior-inferior (the axial slicing axis).

    Without one (degenerate affine), fall back to the coarsest axis, which is the through-plane
    axis in typical anisotropic scans; ties go to the last axis.
    """
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
        raise InvalidInputError(
            f"expected a finite 4x4 affine, got shape {affine.shape} "
            f"with {int(np.count_nonzero(~np.isfinite(affine)))} non-finite entries"
        )
    for axis, code in enumerate(aff2axcodes(affine)):
        if code in ("S", "I"):
            return axis
    sizes = voxel_sizes(affine)
    return int(np.flatnonzero(np.isclose(sizes, sizes.max()))[-1])


def load_volume(path: Path | str) -> tuple[np.ndarray, tuple[float, float, float], int]:
    """Read a NIfTI file as (volume with slices on the last axis, (row, col, slice) mm, axis).

    ``axis`` is the slicing axis in the file's own array order. A 2-D file comes back as a
    stack of one slice with axis 2.
    """
    volume = _load_nifti(_existing_file(path))
    return volume.data, volume.spacing, volume.axis


def _load_nifti(path: Path) -> _Volume:
    try:
        image = nib.load(path)
        file_shape = tuple(image.shape)
    except _NIBABEL_ERRORS as error:
        raise InvalidInputError(f"cannot read NIfTI file {path}: {error}") from error
    shape = _spatial_shape(file_shape, path)
    try:
        data = np.asarray(image.get_fdata(dtype=np.float32)).reshape(shape)
        zooms = [float(z) for z in image.header.get_zooms()[: len(shape)]]
    except _NIBABEL_ERRORS as error:
        raise InvalidInputError(f"cannot read NIfTI data from {path}: {error}") from error
    if len(shape) == 2:
        return _Volume(data[..., np.newaxis], (*zooms, _thickness_2d(image.header)), 2, True)
    axis = slice_axis(image.affine)
    order = [a for a in range(3) if a != axis] + [axis]
    spacing = (zooms[order[0]], zooms[order[1]], zooms[order[2]])
    return _Volume(np.moveaxis(data, axis, -1), spacing, axis, False)


def _spatial_shape(shape: tuple[int, ...], path: Path) -> tuple[int, ...]:
    # Axes past the third are time/vector axes in NIfTI; a trailing run of length-1 ones
    # (as some converters write) carries no data, so it is dropped rather than refused.
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) not in (2, 3):
        raise InvalidInputError(
            f"{path}: NIfTI data of shape {shape}; expected a 2-D image or a 3-D volume"
        )
    if 0 in shape:
        raise InvalidInputError(f"{path}: NIfTI data of shape {shape} holds no voxels")
    return shape


def _thickness_2d(header: nib.Nifti1Header) -> float:
    # get_zooms() stops at the data's 2 axes; pixdim[3] may still record the slice thickness.
    thickness = float(header["pixdim"][3]) if "pixdim" in header else 0.0
    return thickness if np.isfinite(thickness) and thickness > 0 else 1.0


def iter_slices(path: Path | str) -> Iterator[Slice]:
    """Slices from one file, or from a folder's supported files (sorted, non-recursive,
    hidden files skipped). Raises InvalidInputError on a missing path, an unsupported file
    or two slices with the same id."""
    path = Path(path)
    if path.is_dir():
        files = _supported_files(path)
    elif path.is_file():
        if _matched_suffix(path) is None:
            raise InvalidInputError(
                f"{path}: unsupported file type; expected one of {', '.join(SUPPORTED_SUFFIXES)}"
            )
        files = [path]
    else:
        raise InvalidInputError(f"{path} does not exist; expected an image file or a folder")
    return _unique_slices(files)


def _unique_slices(files: list[Path]) -> Iterator[Slice]:
    # Ids name output files downstream, so a repeat ("a.png" and "a.tif") must not overwrite.
    first_source: dict[str, str] = {}
    for file in files:
        for item in _file_slices(file):
            if item.slice_id in first_source:
                raise InvalidInputError(
                    f"slice id {item.slice_id!r} from {item.source} repeats the one from "
                    f"{first_source[item.slice_id]}; rename one file so ids stay unique"
                )
            first_source[item.slice_id] = item.source
            yield item


def _file_slices(file: Path) -> Iterator[Slice]:
    suffix = _matched_suffix(file)
    assert suffix is not None  # callers only pass supported files
    stem = file.name[: -len(suffix)]
    if suffix in IMAGE_SUFFIXES:
        yield Slice(stem, load_image_file(file), stem, 0, None, str(file))
        return
    volume = _load_nifti(file)
    if volume.is_2d:
        image = validate_slice(volume.data[..., 0], str(file))
        yield Slice(stem, image, stem, 0, volume.spacing, str(file))
        return
    for index in range(volume.data.shape[-1]):
        image = validate_slice(volume.data[..., index], f"{file} (slice {index})")
        yield Slice(f"{stem}_z{index:03d}", image, stem, index, volume.spacing, str(file))


def _supported_files(folder: Path) -> list[Path]:
    try:
        entries = list(folder.iterdir())
    except OSError as error:
        raise InvalidInputError(f"cannot list folder {folder}: {error}") from error
    return sorted(
        (
            entry
            for entry in entries
            if not entry.name.startswith(".")
            and _matched_suffix(entry) is not None
            and entry.is_file()
        ),
        key=lambda entry: entry.name,
    )


def _matched_suffix(path: Path) -> str | None:
    name = path.name.lower()
    for suffix in SUPPORTED_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return suffix
    return None


def _existing_file(path: Path | str) -> Path:
    path = Path(path)
    if not path.is_file():
        what = "is not a file" if path.exists() else "does not exist"
        raise InvalidInputError(f"{path} {what}; expected an image file")
    return path
