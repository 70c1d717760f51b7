"""Benchmark pipeline: data set layouts, preprocessing, split, cell plan, report, resumable
runner."""

from __future__ import annotations

import csv
import importlib
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

import sugfw.experiment.runner as runner
from sugfw.cli import main
from sugfw.errors import BudgetError, InvalidInputError
from sugfw.experiment import (
    CONFIGS,
    BenchConfig,
    Case,
    PreparedCase,
    find_case_files,
    foreground_slices,
    load_msd_dataset,
    markdown_table,
    plan_cells,
    prepare_case,
    run_bench,
    split_cases,
)
from sugfw.experiment.report import (
    dsc_curves,
    load_results,
    plot_dsc,
    seed_spread_table,
    write_report,
)
from sugfw.experiment.runner import RESULT_COLUMNS, predict_case
from sugfw.records import SliceRecord, content_hash
from sugfw.segmentation.preprocess import normalise_volume

pytestmark = pytest.mark.usefixtures("one_torch_thread")
# The package re-exports the function ``train``, which hides the module of the same name.
train_module = importlib.import_module("sugfw.segmentation.train")

# Array axis 0 runs superior (3 mm), axis 1 right (0.7 mm), axis 2 anterior (0.8 mm).
SLICE_FIRST_AFFINE = np.array([[0, 0.7, 0, 0], [0, 0, 0.8, 0], [3.0, 0, 0, 0], [0, 0, 0, 1]])


def write_nifti(
    path: Path, data: np.ndarray, affine: np.ndarray = np.diag([1.0, 1.0, 2.5, 1.0])
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.Nifti1Image(data, affine).to_filename(path)


def disk_case(seed: int, shape=(24, 24, 8), slices=(3, 4)) -> tuple[np.ndarray, np.ndarray]:
    """Noise plus a bright disk on ``slices``; the label is the disk."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    disk = (rows - 12 + seed % 3) ** 2 + (cols - 11) ** 2 < 36
    label = np.zeros(shape, np.uint8)
    for z in slices:
        label[..., z] = disk
    image = (100.0 * label + rng.normal(0, 5, shape)).astype(np.float32)
    return image, label


# ---------------------------------------------------------------- data set layouts


def test_msd_layout_pairs_channels_test_split_and_orientation(tmp_path):
    slice_first_label = np.zeros((6, 20, 24), np.uint8)
    slice_first_label[2:4, 5:9, 10:15] = 1
    image = (100.0 * slice_first_label + 1.0).astype(np.float32)
    write_nifti(tmp_path / "imagesTr/caseA_0000.nii.gz", image, SLICE_FIRST_AFFINE)
    write_nifti(
        tmp_path / "imagesTr/caseA_0001.nii.gz", -image, SLICE_FIRST_AFFINE
    )  # 2nd channel: unused
    write_nifti(tmp_path / "labelsTr/caseA.nii.gz", slice_first_label, SLICE_FIRST_AFFINE)
    write_nifti(tmp_path / "imagesTr/caseB.nii.gz", image, SLICE_FIRST_AFFINE)
    write_nifti(tmp_path / "labelsTr/caseB.nii.gz", slice_first_label, SLICE_FIRST_AFFINE)
    write_nifti(tmp_path / "imagesTs/caseC.nii.gz", image, SLICE_FIRST_AFFINE)
    write_nifti(tmp_path / "labelsTs/caseC.nii.gz", slice_first_label, SLICE_FIRST_AFFINE)
    write_nifti(
        tmp_path / "imagesTs/caseD.nii.gz", image, SLICE_FIRST_AFFINE
    )  # unlabelled: skipped
    (tmp_path / "imagesTr/._caseB.nii.gz").write_bytes(b"macOS resource fork")

    files = find_case_files(tmp_path)
    assert [(f.case_id, f.image.name, f.subset) for f in files] == [
        ("caseA", "caseA_0000.nii.gz", "train"),
        ("caseB", "caseB.nii.gz", "train"),
        ("caseC", "caseC.nii.gz", "test"),
    ]
    case = load_msd_dataset(tmp_path)[0]
    # Slices move to the last axis: (6, 20, 24) -> (20, 24, 6), spacing (row, col, slice).
    assert case.image.shape == case.label.shape == (20, 24, 6)
    assert case.axis == 0
    assert case.spacing == pytest.approx((0.7, 0.8, 3.0))
    assert np.array_equal(case.label, np.moveaxis(slice_first_label, 0, -1))
    assert np.array_equal(case.label > 0, case.image > 50)  # label and image stay registered


def test_msd_dataset_json_training_list_is_used(tmp_path):
    image, label = disk_case(0)
    for case_id in ("la_001", "la_002"):
        write_nifti(tmp_path / f"imagesTr/{case_id}.nii.gz", image)
        write_nifti(tmp_path / f"labelsTr/{case_id}.nii.gz", label)
    listing = {
        "training": [{"image": "./imagesTr/la_002.nii.gz", "label": "./labelsTr/la_002.nii.gz"}]
    }
    (tmp_path / "dataset.json").write_text(json.dumps(listing))
    assert [f.case_id for f in find_case_files(tmp_path)] == ["la_002"]


def test_msd_training_image_without_label_is_refused(tmp_path):
    image, label = disk_case(0)
    write_nifti(tmp_path / "imagesTr/a.nii.gz", image)
    write_nifti(tmp_path / "labelsTr/a.nii.gz", label)
    write_nifti(tmp_path / "imagesTr/b.nii.gz", image)
    with pytest.raises(InvalidInputError, match=r"without a label.*b\.nii\.gz"):
        find_case_files(tmp_path)


def test_plain_folder_pairs_by_label_suffix(tmp_path):
    image, label = disk_case(1)
    write_nifti(tmp_path / "p1.nii.gz", image)
    write_nifti(tmp_path / "p1_seg.nii.gz", label)
    write_nifti(tmp_path / "p2.nii", image)
    write_nifti(tmp_path / "p2_segmentation.nii.gz", label)
    files = find_case_files(tmp_path)
    assert [(f.case_id, f.image.name, f.label.name) for f in files] == [
        ("p1", "p1.nii.gz", "p1_seg.nii.gz"),
        ("p2", "p2.nii", "p2_segmentation.nii.gz"),
    ]
    case = load_msd_dataset(tmp_path)[1]
    assert np.array_equal(case.label, label) and case.spacing == pytest.approx((1.0, 1.0, 2.5))

    write_nifti(tmp_path / "p3_mask.nii.gz", label)
    with pytest.raises(InvalidInputError, match=r"label file\(s\) without an image.*p3_mask"):
        find_case_files(tmp_path)
    (tmp_path / "p3_mask.nii.gz").unlink()
    write_nifti(tmp_path / "p4.nii.gz", image)
    with pytest.raises(InvalidInputError, match=r"without a label.*p4\.nii\.gz"):
        find_case_files(tmp_path)


def test_label_on_another_grid_or_with_fractions_is_refused(tmp_path):
    image, label = disk_case(2)
    write_nifti(tmp_path / "a.nii.gz", image)
    write_nifti(tmp_path / "a_label.nii.gz", np.moveaxis(label, -1, 0), SLICE_FIRST_AFFINE)
    with pytest.raises(InvalidInputError, match="does not match image"):
        load_msd_dataset(tmp_path)
    write_nifti(tmp_path / "a_label.nii.gz", label * 0.5)
    with pytest.raises(InvalidInputError, match="fractional"):
        load_msd_dataset(tmp_path)


def test_missing_or_empty_dataset_folder(tmp_path):
    with pytest.raises(InvalidInputError, match="does not exist"):
        find_case_files(tmp_path / "nowhere")
    with pytest.raises(InvalidInputError, match="no image/label pairs"):
        find_case_files(tmp_path)


# ---------------------------------------------------------------- preprocessing and split


def test_foreground_slices_are_the_z_range_plus_margin():
    label = np.zeros((4, 4, 10), np.uint8)
    label[1, 1, 3] = label[2, 2, 5] = 1
    # Foreground on 3 and 5 (4 is empty but inside the range): 3 - 2 = 1 .. 5 + 2 = 7.
    assert foreground_slices(label, 2).tolist() == [1, 2, 3, 4, 5, 6, 7]
    assert foreground_slices(label, 0).tolist() == [3, 4, 5]
    edge = np.zeros((4, 4, 10), np.uint8)
    edge[0, 0, 1] = 2  # any label > 0 counts; 1 - 2 clips at 0
    assert foreground_slices(edge, 2).tolist() == [0, 1, 2, 3]
    assert foreground_slices(np.zeros((4, 4, 10)), 2).size == 0
    with pytest.raises(InvalidInputError, match="margin"):
        foreground_slices(label, -1)


def test_prepare_case_normalises_the_volume_keeps_the_range_and_resizes():
    rng = np.random.default_rng(0)
    image = rng.normal(50, 10, (32, 48, 6)).astype(np.float32)
    label = np.zeros((32, 48, 6), np.int32)
    label[8:16, 12:24, 2:4] = 1
    case = Case("c", image, label, (0.5, 0.5, 3.0), 2, "train")

    native = prepare_case(case, working_size=None, foreground_margin=1)
    assert native.slice_indices.tolist() == [1, 2, 3, 4]
    # Statistics come from the whole volume, before the z-range is cut.
    expected = np.moveaxis(normalise_volume(image)[..., 1:5], -1, 0)
    assert np.array_equal(native.images, expected)
    assert np.array_equal(native.truth, label[..., 1:5] > 0)

    small = prepare_case(case, working_size=16, foreground_margin=1)
    assert small.images.shape == small.labels.shape == (4, 16, 16)
    assert small.truth.shape == (32, 48, 4) and small.original_size == (32, 48)
    # Nearest-exact: output row i reads input row floor((i + 0.5) * 2) = 2i + 1, in 8..15 for
    # i = 4..7; column j reads floor((j + 0.5) * 3) = 3j + 1, in 12..23 for j = 4..7.
    block = np.zeros((16, 16), np.uint8)
    block[4:8, 4:8] = 1
    assert np.array_equal(small.labels[1], block) and np.array_equal(small.labels[2], block)
    assert not small.labels[0].any() and not small.labels[3].any()


def test_split_is_by_case_disjoint_and_seeded():
    ids = [f"case{i:02d}" for i in range(10)]
    split = split_cases(ids, n_val=2, n_test=3, seed=4)
    assert (len(split.train), len(split.val), len(split.test)) == (5, 2, 3)
    assert set(split.train) | set(split.val) | set(split.test) == set(ids)
    train, val, test = set(split.train), set(split.val), set(split.test)
    assert not (train & val or train & test or val & test)
    assert split_cases(list(reversed(ids)), 2, 3, 4) == split  # order of the input does not matter
    with pytest.raises(InvalidInputError, match="no training case"):
        split_cases(ids, n_val=5, n_test=5, seed=0)
    with pytest.raises(InvalidInputError, match="repeat"):
        split_cases(["a", "a", "b"], 1, 0, 0)


def test_predict_case_maps_class_scores_back_with_bilinear_then_argmax():
    class SignAsLogits(torch.nn.Module):
        def forward(self, x):
            return torch.cat([-x, x], dim=1)

    images = -np.ones((2, 16, 16), np.float32)
    images[:, :8, :8] = 1.0
    case = PreparedCase(
        "c",
        images,
        (images > 0).astype(np.uint8),
        np.arange(2),
        np.zeros((24, 24, 2), bool),
        (1.0, 1.0, 1.0),
    )
    # Output pixel j sits at input coordinate (j + 0.5) / 1.5 - 0.5; the score changes sign at
    # 7.5 (between input pixels 7 and 8), i.e. at j = 11.5: pixels 0..11 are foreground.
    expected = np.zeros((24, 24, 2), bool)
    expected[:12, :12] = True
    assert np.array_equal(predict_case(SignAsLogits(), case, "cpu"), expected)


# ---------------------------------------------------------------- configurations


def test_cpu_config_cells_random_over_five_seeds():
    cells = plan_cells(CONFIGS["cpu"])
    # Random: 3 budgets × 5 seeds = 15; nine other strategies × 3 budgets × 1 seed = 27; full: 1.
    assert len(cells) == 43
    assert sorted({c.seed for c in cells if c.strategy == "random"}) == [0, 1, 2, 3, 4]
    assert [c.key for c in cells if c.strategy == "gscu"] == [
        ("gscu", "0.05", "2025"),
        ("gscu", "0.1", "2025"),
        ("gscu", "0.15", "2025"),
    ]
    assert {"probcover", "fps", "typiclust", "calr", "alps", "gscu_no_greedy"} <= {
        c.strategy for c in cells
    }
    assert cells[-1].key == ("full_supervision", "all", "2025")


def test_cli_lists_every_named_config():
    from sugfw.cli import BENCH_CONFIG_NAMES

    assert sorted(BENCH_CONFIG_NAMES) == sorted(CONFIGS)
    assert CONFIGS["paper_la2018"].budgets == (0.005, 0.01, 0.015)


def test_config_overrides_and_bad_values():
    config = CONFIGS["paper"].with_overrides(budgets=[0.005, 0.015], k=None, iterations=50)
    assert config.budgets == (0.005, 0.015) and config.k == 10 and config.iterations == 50
    assert config.train_config(n_train=20, seed=3, device="cpu").iterations == 50
    # Paper schedule: 1000 epochs × ceil(20 / 8) = 3000 iterations.
    assert CONFIGS["paper"].train_config(n_train=20, seed=3, device="cpu").iterations == 3000
    with pytest.raises(BudgetError, match="strictly between 0 and 1"):
        CONFIGS["cpu"].with_overrides(budgets=[1.5])
    with pytest.raises(InvalidInputError, match="unknown BenchConfig field"):
        CONFIGS["cpu"].with_overrides(epoch=3)
    with pytest.raises(InvalidInputError, match="n_test must be >= 1"):
        CONFIGS["cpu"].with_overrides(n_test=0)


# ---------------------------------------------------------------- report

HAND_MADE_ROWS = [
    # strategy, budget, seed, n_selected, pool, case, dice, hd95_mm, hd95_paper_voxels
    ("random", "0.05", "0", 5, 100, "c1", 0.5, 1.0, 10.0),
    ("random", "0.05", "0", 5, 100, "c2", 0.7, 3.0, 30.0),
    ("random", "0.05", "1", 5, 100, "c1", 0.7, 5.0, 50.0),
    ("random", "0.05", "1", 5, 100, "c2", 0.7, 5.0, 50.0),
    ("gscu", "0.05", "2025", 5, 100, "c1", 0.8, 2.0, 20.0),
    ("gscu", "0.05", "2025", 5, 100, "c2", 0.6, 4.0, 40.0),
    ("gscu", "0.1", "2025", 10, 100, "c1", 0.9, 1.0, 10.0),
    ("gscu", "0.1", "2025", 10, 100, "c2", 0.9, 1.0, 10.0),
    ("full_supervision", "all", "2025", 100, 100, "c1", 0.95, 1.0, 10.0),
    ("full_supervision", "all", "2025", 100, 100, "c2", 0.85, 2.0, 20.0),
]


@pytest.fixture
def results_csv(tmp_path) -> Path:
    path = tmp_path / "results.csv"
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, RESULT_COLUMNS)
        writer.writeheader()
        for strategy, budget, seed, n_sel, pool, case, dice, hd_mm, hd_vox in HAND_MADE_ROWS:
            writer.writerow(
                {
                    "strategy": strategy,
                    "budget": budget,
                    "seed": seed,
                    "n_selected": n_sel,
                    "pool_size": pool,
                    "case_id": case,
                    "dice": dice,
                    "hd95_mm": hd_mm,
                    "dice_paper": dice,
                    "hd95_paper_voxels": hd_vox,
                    "pred_empty": 0,
                    "truth_empty": 0,
                    "best_val_dice": 0.5,
                    "iterations": 2,
                }
            )
    return path


def test_markdown_table_has_table1_shape_and_hand_computed_cells(results_csv):
    table = markdown_table(load_results(results_csv)).splitlines()
    # random 5%: seed 0 DSC 60 ± 10, HD95 2 ± 1; seed 1 DSC 70 ± 0, HD95 5 ± 0
    #   -> means (60 + 70)/2 = 65, stds (10 + 0)/2 = 5; HD95 (2 + 5)/2 = 3.5, (1 + 0)/2 = 0.5.
    # gscu 5%: DSC (80 + 60)/2 = 70, std 10; HD95 3 ± 1. gscu 10%: 90 ± 0 / 1 ± 0.
    # full: DSC 90 ± 5, HD95 1.5 ± 0.5.
    assert table[2:6] == [
        "| strategy | 5% | 10% |",
        "|---|---|---|",
        "| random (mean of 2 seeds) | 65.00 ± 5.00 / 3.50 ± 0.50 | – |",
        "| gscu | 70.00 ± 10.00 / 3.00 ± 1.00 | 90.00 ± 0.00 / 1.00 ± 0.00 |",
    ]
    assert table[-1] == "Full supervision (100 slices, the whole pool): 90.00 ± 5.00 / 1.50 ± 0.50"
    paper = markdown_table(load_results(results_csv), rule="paper")
    assert "| gscu | 70.00 ± 10.00 / 30.00 ± 10.00 | 90.00 ± 0.00 / 10.00 ± 0.00 |" in paper
    assert "HD95 (voxel)" in paper


def test_seed_spread_lists_only_multi_seed_strategies(results_csv):
    # random 5%: per-seed mean DSC 60 (seed 0) and 70 (seed 1) -> 60 – 70, std 5.
    assert seed_spread_table(load_results(results_csv)).splitlines()[2:] == [
        "| strategy | budget | seeds | lowest – highest | std over seeds |",
        "|---|---|---|---|---|",
        "| random | 5% | 2 | 60.00 – 70.00 | 5.00 |",
    ]
    single_seed = [row for row in load_results(results_csv) if row["strategy"] != "random"]
    assert seed_spread_table(single_seed) == ""


def test_dsc_curves_and_plot(results_csv, tmp_path):
    rows = load_results(results_csv)
    curves = dsc_curves(rows)
    assert list(curves) == ["random", "gscu"]
    # random band: seed means 60 and 70 -> std 5 around 65.
    assert curves["random"].share_percent.tolist() == pytest.approx([5.0])
    assert (curves["random"].band_low.tolist(), curves["random"].band_high.tolist()) == (
        pytest.approx([60.0]),
        pytest.approx([70.0]),
    )
    assert curves["gscu"].share_percent.tolist() == pytest.approx([5.0, 10.0])
    assert curves["gscu"].dice_percent.tolist() == pytest.approx([70.0, 90.0])
    assert curves["gscu"].band_low.tolist() == pytest.approx([70.0, 90.0])
    path = plot_dsc(rows, tmp_path / "plot.png")
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == (720, 480)  # 6 × 4 in at 120 dpi


def test_report_refuses_a_foreign_csv(tmp_path):
    path = tmp_path / "other.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(InvalidInputError, match="lacks the columns"):
        load_results(path)


# ---------------------------------------------------------------- runner


class StubRecordScorer:
    """Test double for the SAM scoring step: deterministic random records seeded by content."""

    def __init__(self) -> None:
        self.calls = 0

    def score_image(self, image: np.ndarray, slice_id: str = "") -> SliceRecord:
        self.calls += 1
        digest = content_hash(image)
        rng = np.random.default_rng(int(digest[:12], 16))
        return SliceRecord(
            slice_id,
            digest,
            rng.normal(size=8).astype(np.float32),
            rng.normal(size=8).astype(np.float32),
            float(rng.uniform(0.5, 0.75)),
            np.zeros(image.shape, bool),
            np.zeros(image.shape, np.float16),
            0,
        )


TINY = BenchConfig(
    name="tiny",
    strategies=("gscu", "random"),
    budgets=(3,),
    seeds=(7,),
    random_seeds=(0, 1),
    n_val=1,
    n_test=2,
    foreground_margin=1,
    working_size=16,
    k=1,
    iterations=2,
    batch_size=2,
    crop_size=16,
    eval_every=2,
    device="cpu",
)


@pytest.fixture
def tiny_dataset(tmp_path) -> Path:
    root = tmp_path / "data"
    for index in range(5):
        image, label = disk_case(index)
        write_nifti(root / f"case{index}.nii.gz", image)
        write_nifti(root / f"case{index}_label.nii.gz", label)
    return root


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_run_bench_scores_once_skips_finished_cells_and_resumes(
    tiny_dataset, tmp_path, monkeypatch
):
    scorers: list[StubRecordScorer] = []
    train_calls: list[int] = []
    steps: list[int] = []
    real_train, real_step = runner.train, train_module._step

    def factory(config, cache_dir):
        scorers.append(StubRecordScorer())
        return scorers[-1]

    def counted_train(*args, **kwargs):
        train_calls.append(1)
        return real_train(*args, **kwargs)

    def counted_step(*args, **kwargs):
        steps.append(1)
        return real_step(*args, **kwargs)

    monkeypatch.setattr(runner, "train", counted_train)
    monkeypatch.setattr(train_module, "_step", counted_step)
    out = tmp_path / "out"
    results = run_bench(TINY, tiny_dataset, out, factory, progress=False)

    rows = read_rows(results)
    # 5 cases: 1 val + 2 test leave 2 training cases, each with slices 2..5 (disk on 3, 4, ± 1).
    assert scorers[0].calls == 8  # one scoring pass shared by all cells
    keys = {(r["strategy"], r["budget"], r["seed"]) for r in rows}
    assert keys == {
        ("gscu", "3", "7"),
        ("random", "3", "0"),
        ("random", "3", "1"),
        ("full_supervision", "all", "7"),
    }
    assert len(rows) == 4 * 2  # one row per cell and test case
    assert {r["n_selected"] for r in rows if r["strategy"] != "full_supervision"} == {"3"}
    assert {r["n_selected"] for r in rows if r["strategy"] == "full_supervision"} == {"8"}
    assert len(train_calls) == 4 and len(steps) == 4 * 2

    # A second run trains nothing and leaves the CSV as it was.
    before = results.read_bytes()
    run_bench(TINY, tiny_dataset, out, factory, progress=False)
    assert len(train_calls) == 4 and results.read_bytes() == before

    # A cell interrupted after training, with one of its two rows written: the stray row is
    # dropped, training resumes from its finished checkpoint (no step), the rows come back equal.
    gscu_rows = [r for r in rows if r["strategy"] == "gscu"]
    others = [r for r in rows if r["strategy"] != "gscu"]
    with results.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, RESULT_COLUMNS)
        writer.writeheader()
        writer.writerows(others + gscu_rows[:1])
    run_bench(TINY, tiny_dataset, out, factory, progress=False)
    assert len(train_calls) == 5 and len(steps) == 8
    rerun = read_rows(results)
    assert len(rerun) == 8
    assert [r for r in rerun if r["strategy"] == "gscu"] == gscu_rows


def test_run_bench_refuses_a_folder_of_other_settings(tiny_dataset, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "bench.json").write_text(
        json.dumps({"data": str(tiny_dataset.resolve()), **TINY.result_identity()})
    )
    with pytest.raises(InvalidInputError, match="iterations: 2 -> 3"):
        run_bench(
            TINY.with_overrides(iterations=3),
            tiny_dataset,
            out,
            lambda c, d: StubRecordScorer(),
            progress=False,
        )
    with pytest.raises(InvalidInputError, match="unknown"):
        run_bench(
            TINY.with_overrides(strategies=["nope"]),
            tiny_dataset,
            out,
            lambda c, d: StubRecordScorer(),
        )


def test_run_bench_refuses_a_test_case_without_foreground(tiny_dataset, tmp_path):
    _, label = disk_case(0)
    for index in range(5):  # every case loses its foreground, the evaluated ones included
        write_nifti(tiny_dataset / f"case{index}_label.nii.gz", np.zeros_like(label))
    with pytest.raises(InvalidInputError, match="no foreground slice"):
        run_bench(
            TINY, tiny_dataset, tmp_path / "out", lambda c, d: StubRecordScorer(), progress=False
        )


def test_cli_bench_passes_overrides_and_writes_the_report(
    results_csv, tmp_path, monkeypatch, capsys
):
    import sugfw.experiment

    seen = {}

    def fake_run_bench(config, data, out, progress, test_data=None):
        seen.update(config=config, data=data, out=out, test_data=test_data)
        return results_csv

    monkeypatch.setattr(sugfw.experiment, "run_bench", fake_run_bench)
    code = main(
        [
            "bench",
            "--config",
            "cpu",
            "--data",
            str(tmp_path / "d"),
            "--out",
            str(tmp_path / "o"),
            "--strategies",
            "gscu",
            "--budgets",
            "0.05",
            "10",
            "--k",
            "3",
            "--iterations",
            "5",
            "--quiet",
        ]
    )
    assert code == 0
    config = seen["config"]
    assert (config.strategies, config.budgets, config.k, config.iterations) == (
        ("gscu",),
        (0.05, 10),
        3,
        5,
    )
    assert config.crop_size == CONFIGS["cpu"].crop_size and config.random_seeds == (0, 1, 2, 3, 4)
    assert (tmp_path / "o" / "report.md").is_file() and (
        tmp_path / "o" / "dsc_vs_budget.png"
    ).is_file()
    assert main(["bench", "--data", "d", "--out", "o", "--budgets", "1.5"]) == 2
    assert "budget=1.5" in capsys.readouterr().err


def bench_tested_on(test_root: Path, strategy: str, data: Path, tmp_path: Path) -> list[dict]:
    """Rows of a TINY run of ``strategy`` (no full supervision) tested on ``test_root``."""
    config = TINY.with_overrides(strategies=[strategy], full_supervision=False)
    results = run_bench(
        config,
        data,
        tmp_path / "out",
        lambda c, d: StubRecordScorer(),
        progress=False,
        test_data=test_root,
    )
    return read_rows(results)


def test_run_bench_tests_on_a_separate_labelled_set(tiny_dataset, tmp_path):
    test_root = tmp_path / "test_data"
    for index in range(5, 8):
        image, label = disk_case(index)
        write_nifti(test_root / f"other{index}.nii.gz", image)
        write_nifti(test_root / f"other{index}_label.nii.gz", label)
    rows = bench_tested_on(test_root, "gscu", tiny_dataset, tmp_path)
    # n_test = 2 of the 3 separate cases; --data keeps 1 validation and 4 training cases.
    assert len({r["case_id"] for r in rows}) == 2
    assert {r["case_id"] for r in rows} <= {"other5", "other6", "other7"}
    assert {r["pool_size"] for r in rows} == {"16"}
    assert rows[0]["picks_foreground"] != "" and rows[0]["cluster_sizes"].count(";") == 2


def test_replicate_design_pairs_arms_on_one_subpool_and_reports_paired_differences(
    tiny_dataset, tmp_path
):
    """Seeds are replicates: each draws its own sub-pool of training cases and its own training
    seed, and every arm of a replicate (Random, GSCU, full supervision) selects from that one
    sub-pool. The report opens with the paired table."""
    config = TINY.with_overrides(
        n_test=1,
        seeds=[0, 1],
        random_seeds=[0, 1],
        subpool_cases=1,
        train_seed=None,
        recipe="few_slice",
        budgets=[2],
    )
    out = tmp_path / "out"
    results = run_bench(config, tiny_dataset, out, lambda c, d: StubRecordScorer(), progress=False)
    rows = read_rows(results)
    cases_of = {}
    for cell in (out / "cells").iterdir():
        picks = json.loads((cell / "picks.json").read_text())
        strategy, _, seed = cell.name.rpartition("_s")
        cases_of.setdefault(seed, set()).update(p.rsplit("_z", 1)[0] for p in picks)
    assert all(len(cases) == 1 for cases in cases_of.values())  # one sub-pool per replicate
    full = {r["seed"]: r["n_selected"] for r in rows if r["strategy"] == "full_supervision"}
    assert set(full) == {"0", "1"}
    assert {r["pool_size"] for r in rows if r["strategy"] == "random"} == set(full.values())
    keys = {r["seed"]: r["picks_key"] for r in rows if r["strategy"] == "random"}
    assert keys["0"] != keys["1"]  # another training seed at least
    report = write_report(results, out).markdown.read_text()
    assert "## Paired by replicate" in report and "| 2 | gscu | 2 |" in report


def test_test_data_folder_with_only_images_ts_and_labels_ts(tiny_dataset, tmp_path):
    test_root = tmp_path / "test_data"
    for index in range(5, 7):
        image, label = disk_case(index)
        write_nifti(test_root / "imagesTs" / f"other{index}.nii.gz", image)
        write_nifti(test_root / "labelsTs" / f"other{index}.nii.gz", label)
    files = find_case_files(test_root)
    assert [(f.case_id, f.subset) for f in files] == [("other5", "test"), ("other6", "test")]
    rows = bench_tested_on(test_root, "random", tiny_dataset, tmp_path)
    assert {r["case_id"] for r in rows} == {"other5", "other6"}
