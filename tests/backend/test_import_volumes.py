"""``sugfw-import-volumes``: windowing, slicing and task metadata offline (imports into a real
server: tests/live/test_import_into_label_studio.py)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from backend.labelstudio.import_command import main
from backend.labelstudio.import_volumes import (
    ImportFailedError,
    ProjectUploader,
    SlicePng,
    assign_splits,
    case_id_of,
    find_volumes,
    import_volumes,
    read_case_list,
    reslice,
    window_volume,
    write_slices,
)
from sugfw.errors import InvalidInputError

ROOT = Path(__file__).resolve().parents[2]
SHAPE = (16, 12, 10)
ZOOMS = (0.7, 0.8, 2.5)


def save_volume(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    affine = np.diag([*ZOOMS, 1.0]) if affine is None else affine
    nib.save(nib.Nifti1Image(data.astype(np.float32), affine), path)
    return path


def ramp(shape: tuple[int, ...] = SHAPE) -> np.ndarray:
    return np.arange(np.prod(shape), dtype=np.float32).reshape(shape)


def read_png(path: Path) -> tuple[str, np.ndarray]:
    with Image.open(path) as image:
        return image.mode, np.asarray(image)


# -- windowing
# ----------------------------------------------------------------------------------------


def test_window_maps_the_volume_percentiles_to_0_and_255():
    values = np.arange(200, dtype=np.float32)
    # numpy's linear percentile over 0..199: P0.5 = 0.005*199 = 0.995, P99.5 = 0.995*199 = 198.005,
    # window width 197.01. v=50: (50-0.995)/197.01*255 = 63.43 → 63; v=100: 128.15 → 128;
    # v=1: 0.0065 → 0; v=198: 254.99 → 255; 0 and 199 fall outside the window → 0, 255.
    out = window_volume(values)
    assert out.dtype == np.uint8
    assert [int(out[v]) for v in (0, 1, 50, 100, 198, 199)] == [0, 0, 63, 128, 255, 255]


def test_window_of_a_constant_volume_is_black():
    out = window_volume(np.full((8, 8, 3), 42.0))
    assert out.dtype == np.uint8 and not out.any()


def test_window_clips_outliers_instead_of_stretching_to_them():
    values = np.concatenate([np.linspace(0, 100, 999), [1e6]])
    out = window_volume(values)
    # Sorted, value i of the ramp is i*100/998. P0.5 sits at index 0.005*999 = 4.995 → 0.5005;
    # P99.5 at 994.005 → 99.5996. values[499] = 50.0 → (50-0.5005)/99.0991*255 = 127.37 → 127,
    # where a min-max window would give 50/1e6*255 → 0. The hot voxel saturates at 255.
    assert (out[499], out[-1]) == (127, 255)


# -- slicing and metadata
# -------------------------------------------------------------------------------


def test_slices_are_written_as_8_bit_pngs_with_their_metadata(tmp_path):
    volume = save_volume(tmp_path / "la_007.nii.gz", ramp())
    out = tmp_path / "png"
    out.mkdir()
    slices = write_slices([volume], out, slice_step=4, splits={"la_007": "test"})
    # 10 axial slices, every 4th: 0, 4, 8.
    assert [s.slice_index for s in slices] == [0, 4, 8]
    assert [s.path.name for s in slices] == [
        "la_007_z000.png",
        "la_007_z004.png",
        "la_007_z008.png",
    ]
    assert all(s.case_id == "la_007" and s.split == "test" for s in slices)
    assert slices[0].spacing == pytest.approx(ZOOMS)
    mode, pixels = read_png(slices[1].path)
    assert mode == "L" and pixels.shape == (16, 12)
    # Ramp of 1920 voxels: P0.5 = 0.005*1919 = 9.595, P99.5 = 1909.405, width 1899.81.
    # Slice 4, pixel (8, 0) holds 8*120 + 0*10 + 4 = 964: (964-9.595)/1899.81*255 = 128.10 → 128.
    # Pixel (0, 0) holds 4 < 9.595 → 0; pixel (15, 11) holds 1914 > 1909.405 → 255.
    assert (pixels[8, 0], pixels[0, 0], pixels[15, 11]) == (128, 0, 255)


def test_task_data_carries_numbers_not_strings():
    item = SlicePng(Path("la_007_z004.png"), "la_007", 4, (0.7, 0.8, 2.5), "train")
    assert item.task_data("/data/upload/1/x.png") == {
        "image": "/data/upload/1/x.png",
        "case_id": "la_007",
        "slice_index": 4,
        "spacing": [0.7, 0.8, 2.5],
        "split": "train",
    }
    assert "split" not in SlicePng(Path("a.png"), "a", 0, (1.0, 1.0, 1.0)).task_data("u")


def test_png_names_are_safe_for_the_server_and_case_ids_stay_exact(tmp_path):
    volume = save_volume(tmp_path / "patient 01+.nii.gz", ramp())
    out = tmp_path / "png"
    out.mkdir()
    first = write_slices([volume], out, limit=1)[0]
    assert (first.path.name, first.case_id) == ("patient_01__z000.png", "patient 01+")
    clash = save_volume(tmp_path / "patient_01_.nii.gz", ramp())
    with pytest.raises(InvalidInputError, match="give the same PNG names"):
        write_slices([volume, clash], out)


def test_limit_counts_slices_across_volumes(tmp_path):
    volumes = [save_volume(tmp_path / f"case{i}.nii.gz", ramp()) for i in (1, 2)]
    out = tmp_path / "png"
    out.mkdir()
    slices = write_slices(volumes, out, slice_step=3, limit=6)
    # Indices 0, 3, 6, 9 of case1, then the first two of case2.
    assert [(s.case_id, s.slice_index) for s in slices] == [
        ("case1", 0),
        ("case1", 3),
        ("case1", 6),
        ("case1", 9),
        ("case2", 0),
        ("case2", 3),
    ]


def test_axial_axis_comes_from_the_affine_and_axis_overrides_it(tmp_path):
    # Array axis 0 runs superior-inferior (2.5 mm); axes 1 and 2 are R (0.8 mm) and A (0.7 mm).
    affine = np.array([[0, 0.8, 0, 0], [0, 0, 0.7, 0], [2.5, 0, 0, 0], [0, 0, 0, 1.0]])
    raw = ramp((10, 16, 12))
    path = save_volume(tmp_path / "tilted.nii.gz", raw, affine)
    out = tmp_path / "png"
    out.mkdir()
    axial = write_slices([path], out, slice_step=9)
    assert [s.slice_index for s in axial] == [0, 9] and axial[0].spacing == pytest.approx(
        (0.8, 0.7, 2.5)
    )
    assert np.array_equal(read_png(axial[1].path)[1], window_volume(raw)[9])

    across = write_slices([path], out, slice_step=11, axis=2)
    assert [s.slice_index for s in across] == [0, 11]
    # Cut along file axis 2: rows follow file axis 0 (2.5 mm), columns file axis 1 (0.8 mm).
    assert across[0].spacing == pytest.approx((2.5, 0.8, 0.7))
    assert np.array_equal(read_png(across[1].path)[1], window_volume(raw)[:, :, 11])


def test_reslice_round_trips_spacing():
    volume = ramp((16, 12, 10))  # as load_volume returns it after cutting along file axis 0
    again, spacing = reslice(*reslice(volume, (0.8, 0.7, 2.5), 0, 1), 1, 0)
    assert np.array_equal(again, volume) and spacing == (0.8, 0.7, 2.5)


def test_slices_thinner_than_the_minimum_are_refused(tmp_path):
    path = save_volume(tmp_path / "thin.nii.gz", ramp((16, 12, 4)))
    with pytest.raises(
        InvalidInputError, match="thin.nii.gz: slices of 16 x 4 pixels along axis 1"
    ):
        write_slices([path], tmp_path, axis=1)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"slice_step": 0}, "--slice-step 0"),
        ({"limit": 0}, "--limit 0"),
        ({"axis": 3}, "--axis 3"),
    ],
)
def test_bad_slicing_options_are_refused(tmp_path, kwargs, message):
    path = save_volume(tmp_path / "a.nii.gz", ramp())
    with pytest.raises(InvalidInputError, match=message):
        write_slices([path], tmp_path, **kwargs)


# -- finding volumes, case ids, splits
# -------------------------------------------------------------------


def test_msd_folder_is_read_from_images_tr(tmp_path):
    (tmp_path / "imagesTr").mkdir()
    (tmp_path / "labelsTr").mkdir()
    for case in ("la_003", "la_001"):
        save_volume(tmp_path / "imagesTr" / f"{case}.nii.gz", ramp())
        save_volume(tmp_path / "labelsTr" / f"{case}.nii.gz", ramp())
    (tmp_path / "imagesTr" / "._la_001.nii.gz").write_bytes(b"resource fork")
    found = find_volumes([tmp_path])
    assert found == [
        tmp_path / "imagesTr" / "la_001.nii.gz",
        tmp_path / "imagesTr" / "la_003.nii.gz",
    ]


def test_nnunet_channel_suffix_is_dropped_and_other_channels_skipped(tmp_path):
    for name in ("heart_0000.nii.gz", "heart_0001.nii.gz", "la_003.nii"):
        save_volume(tmp_path / name, ramp())
    found = find_volumes([tmp_path])
    assert [case_id_of(path) for path in found] == ["heart", "la_003"]


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (["a.nii", "a.nii.gz"], "case id 'a'"),
        (["notes.txt"], "no NIfTI volumes"),
    ],
)
def test_bad_folders_are_refused(tmp_path, names, message):
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    with pytest.raises(InvalidInputError, match=message):
        find_volumes([tmp_path])


def test_missing_or_non_nifti_inputs_are_refused(tmp_path):
    with pytest.raises(InvalidInputError, match="nowhere does not exist"):
        find_volumes([tmp_path / "nowhere"])
    (tmp_path / "slice.png").write_bytes(b"x")
    with pytest.raises(InvalidInputError, match="slice.png: not a NIfTI volume"):
        find_volumes([tmp_path / "slice.png"])


def test_case_list_ignores_comments_and_blank_lines(tmp_path):
    path = tmp_path / "test_cases.txt"
    path.write_text("# held out\nla_003\n\n  la_010  # second\n")
    assert read_case_list(path) == {"la_003", "la_010"}


def test_splits_from_a_test_list_or_one_flag():
    cases = ["la_001", "la_002", "la_003"]
    assert assign_splits(cases, test_cases={"la_002"}) == {
        "la_001": "train",
        "la_002": "test",
        "la_003": "train",
    }
    assert assign_splits(cases, split="test") == dict.fromkeys(cases, "test")
    assert assign_splits(cases) == dict.fromkeys(cases)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"test_cases": {"la_02"}}, r"test case ids \['la_02'\] match no volume"),
        ({"split": "val"}, "split 'val'"),
        ({"split": "test", "test_cases": {"la_001"}}, "not both"),
    ],
)
def test_bad_splits_are_refused(kwargs, message):
    with pytest.raises(InvalidInputError, match=message):
        assign_splits(["la_001"], **kwargs)


# -- upload failures, offline
# --------------------------------------------------------------------------


class FakeServer:
    """Answers like Label Studio's import endpoints; upload request number ``fail_upload`` gets
    HTTP 500."""

    def __init__(self, fail_upload: int | None = None, refuse_tasks: bool = False) -> None:
        self.fail_upload = fail_upload
        self.refuse_tasks = refuse_tasks
        self.uploads = 0
        self.stored: dict[int, str] = {}
        self.tasks: list[dict] = []
        self.projects = SimpleNamespace(
            get=lambda id: SimpleNamespace(title="p"), import_tasks=self._import_tasks
        )
        self.files = SimpleNamespace(list=self._list_files, delete=lambda id: self.stored.pop(id))
        self.sdk = self

    def request(self, method, path, *, params, files, timeout):
        self.uploads += 1
        if self.uploads == self.fail_upload:
            return SimpleNamespace(status_code=500, text="disk full")
        names = [name for name, _content, _type in files.values()]
        assert len(set(files)) == len(files)  # distinct form-field names, or files collapse
        ids = [len(self.stored) + i + 1 for i in range(len(names))]
        self.stored.update({i: f"upload/1/0a1b2c3d-{name}" for i, name in zip(ids, names)})
        return SimpleNamespace(status_code=201, json=lambda: {"file_upload_ids": ids})

    def _list_files(self, id, ids):
        return [SimpleNamespace(id=i, file=self.stored[i]) for i in json.loads(ids)]

    def _import_tasks(self, id, request, return_task_ids):
        if self.refuse_tasks:
            from label_studio_sdk.core.api_error import ApiError

            raise ApiError(status_code=400, body={"image": ["missing"]})
        first = len(self.tasks) + 100
        self.tasks.extend(request)
        return SimpleNamespace(task_ids=list(range(first, first + len(request))))


def fake_slices(tmp_path: Path, count: int) -> list[SlicePng]:
    items = []
    for index in range(count):
        path = tmp_path / f"c_z{index:03d}.png"
        path.write_bytes(b"png")
        items.append(SlicePng(path, "c", index, (1.0, 1.0, 2.0)))
    return items


def test_batches_become_tasks_pointing_at_their_uploads(tmp_path):
    server = FakeServer()
    report = ProjectUploader(server, 1, batch_size=2).upload(fake_slices(tmp_path, 5))
    assert server.uploads == 3  # 5 slices in batches of 2: 2 + 2 + 1
    assert report.task_ids == {f"c_z{i:03d}.png": 100 + i for i in range(5)}
    assert server.tasks[3] == {
        "data": {
            "image": "/data/upload/1/0a1b2c3d-c_z003.png",
            "case_id": "c",
            "slice_index": 3,
            "spacing": [1.0, 1.0, 2.0],
        },
    }


def test_a_failed_batch_lists_every_slice_not_imported(tmp_path):
    server = FakeServer(fail_upload=2)
    report = ProjectUploader(server, 1, batch_size=2).upload(fake_slices(tmp_path, 5))
    # Batch 1 (slices 0, 1) made it; batch 2 failed, so 2, 3 and the never-sent 4 did not.
    assert list(report.task_ids) == ["c_z000.png", "c_z001.png"]
    assert [item.slice_index for item in report.failed] == [2, 3, 4]
    message = report.failure_message()
    assert "HTTP 500: disk full" in message and "c: slices 2, 3, 4" in message


def test_files_of_a_batch_whose_tasks_are_refused_are_deleted(tmp_path):
    server = FakeServer(refuse_tasks=True)
    report = ProjectUploader(server, 1, batch_size=2).upload(fake_slices(tmp_path, 3))
    assert server.uploads == 1 and server.stored == {} and report.task_ids == {}
    assert [item.slice_index for item in report.failed] == [0, 1, 2]
    assert report.error == 'HTTP 400: {"image": ["missing"]}'


def test_an_incomplete_import_raises_with_the_missing_slices(tmp_path):
    save_volume(tmp_path / "la_004.nii.gz", ramp())
    with pytest.raises(
        ImportFailedError, match=r"2 slice\(s\) were not imported .*la_004: slices 0, 5"
    ):
        import_volumes([tmp_path], 1, FakeServer(fail_upload=1), slice_step=5)


def test_cli_fails_loudly_without_printing_the_key(tmp_path, capsys):
    with socket.socket() as probe:  # a port nothing listens on once the probe closes
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    save_volume(tmp_path / "a.nii.gz", ramp())
    secret = "0123456789abcdef0123456789abcdef01234567"
    status = main(
        [str(tmp_path), "--project", "1", "--url", f"http://127.0.0.1:{port}", "--api-key", secret]
    )
    err = capsys.readouterr().err
    assert status == 2 and "cannot reach Label Studio" in err and secret not in err


def test_cli_needs_url_and_key(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("LABEL_STUDIO_URL", raising=False)
    monkeypatch.delenv("LABEL_STUDIO_API_KEY", raising=False)
    assert main([str(tmp_path), "--project", "1", "--url", "http://127.0.0.1:1"]) == 2
    assert "--api-key / LABEL_STUDIO_API_KEY is not set" in capsys.readouterr().err


def test_the_library_cli_does_not_load_label_studio():
    code = (
        "import sys, sugfw.cli; sugfw.cli.build_parser(); "
        "print(sorted(m for m in sys.modules if 'label_studio' in m))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout
    assert out.strip() == "[]"
