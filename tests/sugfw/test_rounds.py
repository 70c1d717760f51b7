"""The multi-round benchmark on a tiny synthetic data set (stub SAM records, real UNet training)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sugfw.active import rank_unlabelled, unet_signals
from sugfw.errors import InvalidInputError
from sugfw.experiment import runner, write_report
from sugfw.experiment.rounds import run_rounds
from sugfw.segmentation.train import load_trained_unet
from tests.sugfw.test_experiment import TINY, StubRecordScorer, read_rows, tiny_dataset  # noqa: F401


def _factory(config, cache_dir):
    return StubRecordScorer()


@pytest.fixture
def trainings(monkeypatch) -> list[int]:
    """One entry per UNet training the runners start."""
    calls: list[int] = []
    real = runner.train

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(runner, "train", counted)
    return calls


def test_rounds_share_the_cold_start_follow_the_strategy_and_resume(
    tiny_dataset,  # noqa: F811
    tmp_path,
    trainings,
):
    out = tmp_path / "out"
    path = run_rounds(TINY, tiny_dataset, out, 1, 2, "entropy", "gscu", _factory, progress=False)
    rows = read_rows(path)
    keys = {(r["strategy"], r["budget"], r["seed"]) for r in rows}
    assert keys == {("entropy", "3", "7"), ("entropy", "5", "7"), ("random", "3", "7"),
                    ("random", "5", "7")}  # fmt: skip
    assert len(trainings) == 3  # round 0 trained once for both arms
    by_key = {}
    for r in rows:
        by_key.setdefault((r["strategy"], r["budget"]), []).append(r["dice"])
    assert by_key[("entropy", "3")] == by_key[("random", "3")]
    assert {r["cluster_sizes"] for r in rows} == {"round 0", "round 1"}

    # Round 1 of the entropy arm took the two most uncertain unlabelled slices of round 0's UNet.
    cells = out / "cells"
    round0 = json.loads((cells / "rounds_entropy_r0_s7" / "round.json").read_text())
    round1 = json.loads((cells / "rounds_entropy_r1_s7" / "round.json").read_text())
    assert set(round0["picks"]) < set(round1["picks"])
    data = runner.prepare_bench(TINY, tiny_dataset, out, _factory, progress=False)
    unlabelled = np.setdiff1d(np.arange(len(data.pool.images)), round0["picks"])
    model = load_trained_unet(round0["checkpoint"])
    images = np.stack([data.pool.images[i] for i in unlabelled])
    signals = unet_signals(model, images, seed=7)
    cold = runner.select_queue(runner.Cell("gscu", 3, 7), data.index).ranks()
    order = rank_unlabelled("entropy", cold[unlabelled], signals, 2, 7000 + 1)
    expected = sorted(round0["picks"] + [int(i) for i in unlabelled[order[:2]]])
    assert round1["picks"] == expected

    # The strategy benchmark's report reads the rounds: round 0 is the same model for both arms.
    report = write_report(path, out / "rounds").markdown.read_text()
    assert "| 3 slices | entropy | 1 | 2 |" in report and "+0.00 [+0.00, +0.00]" in report
    # As `sugfw bench --rounds` writes it: paired by seed, round 0 differs by exactly 0.
    paired = write_report(path, out / "rounds", paired=True).markdown.read_text()
    assert "## Paired by replicate" in paired and "| 3 | entropy | 1 | +0.00 |" in paired

    # A rerun trains nothing and leaves the rows as they were.
    before = path.read_bytes()
    run_rounds(TINY, tiny_dataset, out, 1, 2, "entropy", "gscu", _factory, progress=False)
    assert len(trainings) == 3 and path.read_bytes() == before


def test_rounds_check_their_arguments(tiny_dataset, tmp_path):  # noqa: F811
    with pytest.raises(InvalidInputError, match="reference"):
        run_rounds(TINY, tiny_dataset, tmp_path, 1, 2, "random", "gscu", _factory)
    with pytest.raises(InvalidInputError, match=">= 1"):
        run_rounds(TINY, tiny_dataset, tmp_path, 0, 2, "entropy", "gscu", _factory)
    with pytest.raises(InvalidInputError, match="exceed the pool"):
        run_rounds(TINY, tiny_dataset, tmp_path, 3, 2, "entropy", "gscu", _factory)


def test_rounds_reuse_the_strategy_benchmarks_cold_start(tiny_dataset, tmp_path, trainings):  # noqa: F811
    out = tmp_path / "out"
    config = TINY.with_overrides(strategies=["gscu"], full_supervision=False)
    bench_rows = read_rows(runner.run_bench(config, tiny_dataset, out, _factory, progress=False))
    assert len(trainings) == 1
    path = run_rounds(config, tiny_dataset, out, 1, 2, "entropy", "gscu", _factory, progress=False)
    assert len(trainings) == 3  # the two round-1 trainings only
    cold = [r for r in read_rows(path) if r["budget"] == "3"]
    assert sorted(r["dice"] for r in cold) == sorted(2 * [r["dice"] for r in bench_rows])
