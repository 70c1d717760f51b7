from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from sugfw.data import (
    Slice,
    iter_slices,
    load_image_file,
    load_volume,
    slice_axis,
    validate_slice,
)
from sugfw.errors import InvalidInputError

# Axis 0 runs superior (3.0 mm), axis 1 right (0.5 mm), axis 2 anterior (0.8 mm):
# aff2axcodes gives ('S', 'R', 'A'), so the axial axis is the FIRST array axis.
AXIAL_FIRST_AFFINE = np.array(
    [
        [0.0, 0.5, 0.0, -10.0],
        [0.0, 0.0, 0.8, 4.0],
        [3.0, 0.0, 0.0, 7.0],
        [0.0, 0.0, 0.0, 1.0],
    ]
)


def _ramp(shape: tuple[int, ...], dtype: type = np.float32) -> np.ndarray:
    """Distinct values 0..N-1, so any transposition or mix-up of slices shows."""
    return np.arange(int(np.prod(shape))).reshape(shape).astype(dtype)


def _save_nifti(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), path)
    return path


# --- 2-D image files -------------------------------------------------------------------------


def test_8bit_png_keeps_values_exactly(tmp_path: Path) -> None:
    pixels = (_ramp((9, 10)) * 2).astype(np.uint8)  # 0..178, plus the extremes below
    pixels[0, 0], pixels[-1, -1] = 0, 255
    Image.fromarray(pixels).save(tmp_path / "grey.png")

    image = load_image_file(tmp_path / "grey.png")

    assert image.dtype == np.float32 and image.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(image, pixels.astype(np.float32))


def test_16bit_png_is_not_clipped_to_8_bits(tmp_path: Path) -> None:
    pixels = np.full((9, 10), 40000, dtype=np.uint16)
    pixels[0, 0], pixels[0, 1] = 65535, 1
    Image.fromarray(pixels).save(tmp_path / "ct16.png")
    assert Image.open(tmp_path / "ct16.png").mode == "I;16"

    image = load_image_file(tmp_path / "ct16.png")

    assert image[5, 5] == 40000.0
    assert image[0, 0] == 65535.0 and image[0, 1] == 1.0


@pytest.mark.parametrize(
    ("mode", "stored", "expected"),
    [
        ("I;16B", np.full((9, 10), 40000, dtype=">u2"), 40000.0),
        ("I", np.full((9, 10), -100000, dtype=np.int32), -100000.0),
        ("F", np.full((9, 10), -1024.5, dtype=np.float32), -1024.5),
    ],
)
def test_wide_tiff_modes_keep_full_range(
    tmp_path: Path, mode: str, stored: np.ndarray, expected: float
) -> None:
    Image.frombytes(mode, (10, 9), stored.tobytes()).save(tmp_path / "wide.tif")
    assert Image.open(tmp_path / "wide.tif").mode == mode

    image = load_image_file(tmp_path / "wide.tif")

    np.testing.assert_array_equal(image, np.full((9, 10), expected, dtype=np.float32))


def test_rgb_with_equal_channels_is_greyscale(tmp_path: Path) -> None:
    grey = (_ramp((9, 10)) % 256).astype(np.uint8)
    Image.fromarray(np.stack([grey, grey, grey], axis=-1)).save(tmp_path / "rgbgrey.png")

    np.testing.assert_array_equal(load_image_file(tmp_path / "rgbgrey.png"), grey)


def test_rgb_with_colour_is_rejected(tmp_path: Path) -> None:
    rgb = np.zeros((9, 10, 3), dtype=np.uint8)
    rgb[2, 3] = (10, 20, 10)  # one pixel whose green differs
    Image.fromarray(rgb).save(tmp_path / "colour.png")

    with pytest.raises(InvalidInputError, match=r"colour image .*colour\.png.*1 pixels.*greyscale"):
        load_image_file(tmp_path / "colour.png")


@pytest.mark.parametrize(("mode", "bands"), [("RGBA", 4), ("LA", 2)])
def test_alpha_images_are_rejected_naming_the_mode(tmp_path: Path, mode: str, bands: int) -> None:
    Image.fromarray(np.zeros((9, 10, bands), dtype=np.uint8), mode).save(tmp_path / "alpha.png")

    with pytest.raises(InvalidInputError, match=rf"alpha\.png: image mode {mode} has an alpha"):
        load_image_file(tmp_path / "alpha.png")


def test_grey_palette_maps_to_grey_levels(tmp_path: Path) -> None:
    indices = (_ramp((9, 10)) % 3).astype(np.uint8)
    palette = Image.fromarray(indices, "P")
    palette.putpalette([7, 7, 7, 100, 100, 100, 250, 250, 250])
    palette.save(tmp_path / "palette.png")

    image = load_image_file(tmp_path / "palette.png")

    # index 0 -> 7, 1 -> 100, 2 -> 250
    np.testing.assert_array_equal(image, np.array([7.0, 100.0, 250.0], np.float32)[indices])


def test_colour_palette_is_rejected(tmp_path: Path) -> None:
    palette = Image.fromarray((_ramp((9, 10)) % 2).astype(np.uint8), "P")
    palette.putpalette([0, 0, 0, 255, 0, 0])  # index 1 is pure red
    palette.save(tmp_path / "redpal.png")

    with pytest.raises(InvalidInputError, match=r"colour image .*redpal\.png.*colour palette"):
        load_image_file(tmp_path / "redpal.png")


def test_unsupported_mode_is_rejected(tmp_path: Path) -> None:
    Image.new("CMYK", (10, 9)).save(tmp_path / "print.jpg")

    with pytest.raises(InvalidInputError, match=r"print\.jpg: unsupported image mode CMYK"):
        load_image_file(tmp_path / "print.jpg")


def test_truncated_png_names_the_file_and_chains_the_cause(tmp_path: Path) -> None:
    Image.fromarray(np.zeros((9, 10), np.uint8)).save(tmp_path / "whole.png")
    (tmp_path / "cut.png").write_bytes((tmp_path / "whole.png").read_bytes()[:40])

    with pytest.raises(InvalidInputError, match=r"cannot read image file .*cut\.png") as caught:
        load_image_file(tmp_path / "cut.png")
    assert isinstance(caught.value.__cause__, OSError)


def test_multi_frame_tiff_reports_its_stack_shape(tmp_path: Path) -> None:
    frames = [Image.fromarray(np.full((9, 10), k, np.uint8)) for k in range(2)]
    frames[0].save(tmp_path / "stack.tif", save_all=True, append_images=frames[1:])

    with pytest.raises(InvalidInputError, match=r"stack\.tif: 2 frames.*\(2, 9, 10\)"):
        load_image_file(tmp_path / "stack.tif")


def test_missing_paths_are_invalid_input(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.png"
    with pytest.raises(InvalidInputError, match=r"nowhere\.png does not exist"):
        load_image_file(missing)
    with pytest.raises(InvalidInputError, match=r"nowhere\.nii does not exist"):
        load_volume(tmp_path / "nowhere.nii")
    with pytest.raises(InvalidInputError, match=r"nowhere\.png does not exist"):
        iter_slices(missing)


# --- validate_slice --------------------------------------------------------------------------


def test_validate_slice_rejects_3d_and_says_the_shape() -> None:
    with pytest.raises(InvalidInputError, match=r"vol: expected a 2-D slice .*\(2, 9, 10\)"):
        validate_slice(np.zeros((2, 9, 10)), "vol")


def test_validate_slice_counts_non_finite_pixels() -> None:
    image = np.zeros((9, 10))
    image[0, 0] = image[1, 1] = np.nan
    image[2, 2] = -np.inf
    image[3, 3] = 1e39  # beyond float32's ~3.4e38: inf once converted

    # 2 NaN + 1 -inf + 1 overflow = 4 non-finite, 2 of them NaN, out of 9 * 10 = 90
    with pytest.raises(InvalidInputError, match=r"nan_img: 4 non-finite .*2 NaN, 2 inf.* of 90"):
        validate_slice(image, "nan_img")


def test_validate_slice_enforces_minimum_side() -> None:
    with pytest.raises(InvalidInputError, match=r"tiny: .*\(7, 20\) is too small.*at least 8"):
        validate_slice(np.zeros((7, 20)), "tiny")
    assert validate_slice(np.zeros((8, 8)), "ok").shape == (8, 8)


def test_validate_slice_accepts_constant_int_image_as_float32() -> None:
    image = validate_slice(np.full((8, 9), 3, dtype=np.int16), "flat")

    assert image.dtype == np.float32
    np.testing.assert_array_equal(image, np.full((8, 9), 3.0, np.float32))


def test_validate_slice_rejects_complex_pixels() -> None:
    with pytest.raises(InvalidInputError, match=r"cplx: expected real-valued pixels.*complex"):
        validate_slice(np.zeros((8, 8), dtype=np.complex64), "cplx")


# --- slice_axis ------------------------------------------------------------------------------


def test_slice_axis_finds_superior_and_inferior_axes() -> None:
    assert slice_axis(np.eye(4)) == 2  # RAS: axis 2 is S
    assert slice_axis(AXIAL_FIRST_AFFINE) == 0
    # Axis 1 points inferior (negative z), axes 0 and 2 run L and P: codes ('L', 'I', 'P').
    # It is also the finest axis (0.5 mm vs 1 and 2 mm), so the spacing fallback cannot pass.
    inferior_middle = np.array([[-1.0, 0, 0, 0], [0, 0, -2.0, 0], [0, -0.5, 0, 0], [0, 0, 0, 1.0]])
    assert slice_axis(inferior_middle) == 1


def test_slice_axis_falls_back_to_coarsest_axis_then_last() -> None:
    # Column 2 is zero, so aff2axcodes gives ('R', 'A', None): no S/I axis.
    # Voxel sizes (1, 2, 0): the coarsest is axis 1.
    assert slice_axis(np.diag([1.0, 2.0, 0.0, 1.0])) == 1
    # All-zero linear part: sizes (0, 0, 0) tie, so the last axis wins.
    assert slice_axis(np.diag([0.0, 0.0, 0.0, 1.0])) == 2


def test_slice_axis_rejects_malformed_affine() -> None:
    with pytest.raises(InvalidInputError, match=r"4x4 affine, got shape \(3, 3\)"):
        slice_axis(np.eye(3))
    bad = np.eye(4)
    bad[0, 3] = np.nan
    with pytest.raises(InvalidInputError, match=r"1 non-finite"):
        slice_axis(bad)


# --- NIfTI volumes ---------------------------------------------------------------------------


def test_load_volume_moves_axial_axis_last_and_reorders_spacing(tmp_path: Path) -> None:
    data = _ramp((10, 12, 9))  # axis 0 is axial under AXIAL_FIRST_AFFINE
    path = _save_nifti(tmp_path / "tilted.nii.gz", data, AXIAL_FIRST_AFFINE)

    volume, spacing, axis = load_volume(path)

    assert axis == 0
    assert volume.shape == (12, 9, 10)
    # zooms in file order (3.0, 0.5, 0.8); axis 0 moved last -> (0.5, 0.8, 3.0)
    assert spacing == (0.5, pytest.approx(0.8), 3.0)
    np.testing.assert_array_equal(volume[..., 4], data[4])


def test_iter_slices_of_a_volume(tmp_path: Path) -> None:
    data = _ramp((10, 12, 9))
    path = _save_nifti(tmp_path / "case7.nii.gz", data, AXIAL_FIRST_AFFINE)

    slices = list(iter_slices(path))

    assert [s.slice_id for s in slices] == [f"case7_z{k:03d}" for k in range(10)]
    assert [s.slice_index for s in slices] == list(range(10))
    assert {s.case_id for s in slices} == {"case7"}
    assert {s.source for s in slices} == {str(path)}
    assert slices[0].spacing == (0.5, pytest.approx(0.8), 3.0)
    for k in (0, 9):
        assert slices[k].image.dtype == np.float32 and slices[k].image.flags["C_CONTIGUOUS"]
        np.testing.assert_array_equal(slices[k].image, data[k])


def test_volume_scale_slope_is_applied(tmp_path: Path) -> None:
    image = nib.Nifti1Image(np.full((8, 8, 2), 3, dtype=np.int16), np.eye(4))
    image.header.set_slope_inter(2.0, 10.0)
    nib.save(image, tmp_path / "scaled.nii")

    volume, _, _ = load_volume(tmp_path / "scaled.nii")

    np.testing.assert_array_equal(volume, np.full((8, 8, 2), 16.0))  # 3 * 2 + 10


def test_2d_nifti_is_one_slice_named_by_stem(tmp_path: Path) -> None:
    data = _ramp((9, 10))
    affine = np.diag([0.7, 0.9, 2.5, 1.0])
    path = _save_nifti(tmp_path / "flat.nii", data, affine)

    (only,) = iter_slices(path)

    assert (only.slice_id, only.case_id, only.slice_index) == ("flat", "flat", 0)
    assert only.spacing == (pytest.approx(0.7), pytest.approx(0.9), 2.5)  # pixdim[3] = 2.5
    np.testing.assert_array_equal(only.image, data)


def test_4d_nifti_is_rejected(tmp_path: Path) -> None:
    path = _save_nifti(tmp_path / "fmri.nii.gz", np.zeros((8, 8, 8, 3), np.float32))

    expected = r"fmri\.nii\.gz: NIfTI data of shape \(8, 8, 8, 3\)"
    with pytest.raises(InvalidInputError, match=expected):
        load_volume(path)


def test_trailing_singleton_axes_are_dropped(tmp_path: Path) -> None:
    data = _ramp((8, 9, 3, 1))
    path = _save_nifti(tmp_path / "padded.nii", data)

    volume, _, axis = load_volume(path)

    assert axis == 2
    np.testing.assert_array_equal(volume, data[..., 0])


def test_truncated_nifti_names_the_file(tmp_path: Path) -> None:
    noise = np.random.default_rng(0).random((32, 32, 16), dtype=np.float32)
    whole = _save_nifti(tmp_path / "whole.nii.gz", noise).read_bytes()
    (tmp_path / "cut.nii.gz").write_bytes(whole[: len(whole) // 2])

    with pytest.raises(InvalidInputError, match=r"cannot read NIfTI .*cut\.nii\.gz") as caught:
        load_volume(tmp_path / "cut.nii.gz")
    assert caught.value.__cause__ is not None


def test_nan_voxel_names_the_slice(tmp_path: Path) -> None:
    data = np.zeros((8, 8, 3), np.float32)
    data[1, 2, 1] = data[3, 3, 1] = np.nan
    path = _save_nifti(tmp_path / "holes.nii", data)

    with pytest.raises(InvalidInputError, match=r"holes\.nii \(slice 1\): 2 non-finite"):
        list(iter_slices(path))


# --- folders ---------------------------------------------------------------------------------


def test_folder_is_sorted_non_recursive_and_skips_other_files(tmp_path: Path) -> None:
    grey = np.zeros((8, 8), np.uint8)
    Image.fromarray(grey).save(tmp_path / "b.png")
    Image.fromarray(grey).save(tmp_path / "A.PNG")  # upper-case suffix still counts
    Image.fromarray(grey).save(tmp_path / "c.tiff")
    Image.fromarray(grey).save(tmp_path / ".hidden.png")
    Image.fromarray(grey).save(tmp_path / "d.gif")
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "sub").mkdir()
    Image.fromarray(grey).save(tmp_path / "sub" / "e.png")
    _save_nifti(tmp_path / "vol.nii.gz", np.zeros((8, 8, 2), np.float32))

    slices = list(iter_slices(tmp_path))

    assert [s.slice_id for s in slices] == ["A", "b", "c", "vol_z000", "vol_z001"]
    assert [s.spacing for s in slices[:3]] == [None, None, None]
    assert slices[1].source == str(tmp_path / "b.png")


def test_folder_without_images_yields_no_slices(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("nothing to score")

    assert list(iter_slices(tmp_path)) == []


def test_unsupported_single_file_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "scan.gif").write_bytes(b"GIF89a")

    with pytest.raises(InvalidInputError, match=r"scan\.gif: unsupported file type"):
        iter_slices(tmp_path / "scan.gif")


def test_repeated_slice_ids_are_rejected(tmp_path: Path) -> None:
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "same.png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "same.tif")

    with pytest.raises(InvalidInputError, match=r"'same' from .*same\.tif repeats .*same\.png"):
        list(iter_slices(tmp_path))


def test_slice_is_immutable(tmp_path: Path) -> None:
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "x.png")
    (item,) = iter_slices(tmp_path)

    assert isinstance(item, Slice)
    with pytest.raises(AttributeError):
        item.slice_id = "y"  # type: ignore[misc]


# --- real data -------------------------------------------------------------------------------


@pytest.mark.slow
def test_la2018_volume_gives_88_axial_slices(la2018_volumes: list[Path]) -> None:
    path = la2018_volumes[0]
    raw = nib.load(path)

    volume, spacing, axis = load_volume(path)
    slices = list(iter_slices(path))

    assert (axis, spacing) == (2, (0.625, 0.625, 0.625))
    assert volume.shape == raw.shape
    assert len(slices) == 88
    assert slices[-1].slice_id == f"{path.name[: -len('.nii.gz')]}_z087"
    np.testing.assert_array_equal(slices[40].image, raw.get_fdata(dtype=np.float32)[..., 40])


def _png_16bit_rgb(path: Path) -> None:
    """A 4×4 16-bit RGB PNG written by hand (Pillow cannot write one): IHDR depth 16, colour type
    2."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    rows = b"".join(b"\x00" + struct.pack(">12H", *([40000] * 12)) for _ in range(4))
    ihdr = struct.pack(">IIBBBBB", 4, 4, 16, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def test_16bit_colour_png_is_refused_rather_than_truncated(tmp_path):
    path = tmp_path / "deep.png"
    _png_16bit_rgb(path)
    # Pillow would hand back 8-bit values (40000 >> 8 = 156) without a word.
    assert Image.open(path).mode == "RGB"
    with pytest.raises(InvalidInputError, match="16-bit RGB PNG"):
        load_image_file(path)
