"""Each benchmark cell trains on exactly its strategy's picks: the slices (pixels and labels) that
reach ``train`` are those the strategy selects from the saved records, in pool order (so a set
picked in another order trains the same; a set trained before is not trained again)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import sugfw.experiment.runner as runner
from sugfw.experiment import run_bench
from sugfw.experiment.runner import FULL_SUPERVISION, RECORDS_FILE
from sugfw.records import RecordIndex, content_hash
from sugfw.selection import get_strategy, resolve_budget
from tests.sugfw.test_experiment import TINY, StubRecordScorer

STRATEGIES = ("gscu", "gscu_no_pgdr", "random", "fps")
CONFIG = TINY.with_overrides(name="cells", strategies=STRATEGIES, n_test=1)


@pytest.fixture
def dataset(tmp_path) -> Path:
    """Five cases, a disk on three or four of their eight slices (so pools hold distinct slices)."""
    root = tmp_path / "data"
    root.mkdir()
    for index in range(5):
        rng = np.random.default_rng(index)
        rows, cols = np.mgrid[:24, :24]
        label = np.zeros((24, 24, 8), np.uint8)
        for z in range(2, 5 + index % 2):
            label[..., z] = (rows - 12 + index % 3 + z % 2) ** 2 + (cols - 11) ** 2 < 30 + 4 * z
        image = (100.0 * label + rng.normal(0, 5, label.shape)).astype(np.float32)
        affine = np.diag([1.0, 1.0, 2.5, 1.0])
        nib.Nifti1Image(image, affine).to_filename(root / f"case{index}.nii.gz")
        nib.Nifti1Image(label, affine).to_filename(root / f"case{index}_label.nii.gz")
    return root


def test_each_cell_trains_on_exactly_its_strategys_picks(
    dataset, tmp_path, monkeypatch, one_torch_thread
):
    pools, trained = [], {}
    real_build_pool, real_train = runner.build_pool, runner.train

    def capture_pool(*args, **kwargs):
        pools.append(real_build_pool(*args, **kwargs))
        return pools[-1]

    def capture_train(images, labels, validator, config, checkpoint_dir, **kwargs):
        cell = Path(checkpoint_dir).parent.name
        trained[cell] = ([np.array(i) for i in images], [np.array(m) for m in labels])
        return real_train(images, labels, validator, config, checkpoint_dir, **kwargs)

    monkeypatch.setattr(runner, "build_pool", capture_pool)
    monkeypatch.setattr(runner, "train", capture_train)
    out = tmp_path / "out"
    run_bench(CONFIG, dataset, out, lambda config, cache: StubRecordScorer(), progress=False)

    (pool,) = pools
    index = RecordIndex.load(out / RECORDS_FILE)
    n = len(index.slice_ids)
    assert n == len(pool.images) >= 8 and len(set(index.content_hashes)) == n  # slices tell apart
    position = {digest: i for i, digest in enumerate(index.content_hashes)}

    expected_cells = {f"{FULL_SUPERVISION}_ball_s7": np.arange(n)}
    for strategy in STRATEGIES:
        spec = get_strategy(strategy)
        for budget in CONFIG.budgets:
            for seed in CONFIG.seeds_for(strategy):
                # The strategy run on its own over the saved records, outside the runner.
                selection = spec.select(
                    index.features(spec.features),
                    index.uncertainty,
                    resolve_budget(budget, n),
                    seed,
                )
                expected_cells[f"{strategy}_b{budget!r}_s{seed}"] = np.asarray(selection.picks)
    assert set(trained) <= set(expected_cells)
    trained_sets = {tuple(sorted(int(i) for i in expected_cells[c])) for c in trained}
    for cell, picks in expected_cells.items():  # a cell not trained reused an identical set
        assert cell in trained or tuple(sorted(int(i) for i in picks)) in trained_sets, cell

    for cell, picks in expected_cells.items():
        written = json.loads((out / "cells" / cell / "picks.json").read_text())
        assert written == [str(index.slice_ids[i]) for i in picks], cell  # in pick order
        if cell not in trained:
            continue
        images, labels = trained[cell]
        got = [position[content_hash(image)] for image in images]
        assert got == sorted(int(i) for i in picks), cell  # the same slices, in pool order
        for image, label, i in zip(images, labels, sorted(picks)):
            np.testing.assert_array_equal(image, pool.images[i])
            np.testing.assert_array_equal(label, pool.labels[i])  # each with its own label
    # Not a vacuous comparison: the strategies do pick differently.
    assert len({tuple(p) for c, p in expected_cells.items() if "_b3_" in c}) > 1
