"""The ``sugfw`` command line, end to end on small PNG slices with the real LiteMedSAM weights."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sugfw.cli import main


def write_slices(folder: Path, count: int) -> None:
    folder.mkdir()
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:64, :80]
    for i in range(count):
        disk = (yy - 20 - 4 * i) ** 2 + (xx - 30 - 3 * i) ** 2 < (8 + 2 * i) ** 2
        image = 60 + 120 * disk + rng.normal(0, 3, disk.shape)
        Image.fromarray(image.clip(0, 255).astype(np.uint8)).save(folder / f"slice{i}.png")


@pytest.fixture(scope="module")
def scored(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cli")
    write_slices(root / "slices", 4)
    code = main(
        [
            "score",
            str(root / "slices"),
            "--out",
            str(root / "out"),
            "--k",
            "1",
            "--grid",
            "128",
            "--device",
            "cpu",
            "--quiet",
            "--save-preview",
            str(root / "preview.png"),
        ]
    )
    assert code == 0
    return root


@pytest.mark.slow  # the real LiteMedSAM weights
def test_score_writes_records_cache_and_preview(scored):
    from sugfw.records import RecordIndex

    index = RecordIndex.load(scored / "out" / "records.npz")
    assert list(index.slice_ids) == ["slice0", "slice1", "slice2", "slice3"]
    assert index.features_pgdr.shape == (4, 256)
    assert np.all((index.uncertainty >= 0.5) & (index.uncertainty <= 0.75))
    assert len(list((scored / "out" / "cache").glob("*/*.npz"))) == 4
    assert Image.open(scored / "preview.png").size[0] > 600


@pytest.mark.slow  # the real LiteMedSAM weights
def test_rerun_reuses_the_cache(scored, monkeypatch):
    from sugfw.scoring import Scorer

    def fail(*args, **kwargs):
        raise AssertionError("a cached slice was recomputed")

    monkeypatch.setattr(Scorer, "_compute", fail)
    assert (
        main(
            [
                "score",
                str(scored / "slices"),
                "--out",
                str(scored / "out"),
                "--k",
                "1",
                "--grid",
                "128",
                "--device",
                "cpu",
                "--quiet",
            ]
        )
        == 0
    )


@pytest.mark.slow  # the real LiteMedSAM weights
def test_select_writes_the_full_queue(scored):
    out = scored / "queue.csv"
    assert (
        main(["select", str(scored / "out" / "records.npz"), "--budget", "2", "--out", str(out)])
        == 0
    )
    rows = list(csv.DictReader(out.open()))
    assert [int(r["rank"]) for r in rows] == [0, 1, 2, 3]
    assert sorted(r["slice"] for r in rows) == ["slice0", "slice1", "slice2", "slice3"]
    assert [r["selected"] for r in rows] == ["1", "1", "0", "0"]
    # one pick per cluster: the two selected slices sit in different clusters
    assert rows[0]["cluster"] != rows[1]["cluster"]


@pytest.mark.slow
@pytest.mark.parametrize("budget", ["5", "0", "1.0", "-0.1"])
def test_impossible_budget_is_a_clear_error(scored, budget, capsys):
    assert main(["select", str(scored / "out" / "records.npz"), "--budget", budget]) == 2
    assert "budget" in capsys.readouterr().err.lower()


def test_empty_folder_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["score", str(tmp_path / "empty"), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    assert "no slices to score" in capsys.readouterr().err


def test_corrupt_file_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 30)
    assert (
        main(
            [
                "score",
                str(tmp_path / "in"),
                "--out",
                str(tmp_path / "o"),
                "--quiet",
                "--device",
                "cpu",
            ]
        )
        == 2
    )
    assert "broken.png" in capsys.readouterr().err


@pytest.mark.parametrize("command", [[], ["score"], ["select"]])
def test_help_texts(command):
    result = subprocess.run(
        [sys.executable, "-m", "sugfw.cli", *command, "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0
    assert "usage: sugfw" in result.stdout
    if command == ["score"]:
        assert "--save-preview" in result.stdout and "--uncertainty-sign" in result.stdout


def test_score_with_ray_but_without_ray_installed_names_the_extra(tmp_path, monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as if not installed
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(np.full((16, 16), 9, dtype=np.uint8)).save(folder / "a.png")
    status = main(["score", str(folder), "--out", str(tmp_path / "out"), "--ray", "auto"])
    assert status == 2
    assert "sugfw[ray]" in capsys.readouterr().err
    assert not (tmp_path / "out" / "records.npz").exists()
