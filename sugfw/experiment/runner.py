"""The benchmark of the paper's Table 1 / Fig. 2: score once, then select, train, test per cell.

A cell is (strategy, budget, seed). The training pool is scored once through the record cache
(``out/cache``) and every strategy selects from those records. Per cell: select, train the UNet on
the picked slices (validation on the validation cases), predict every test case slice by slice,
and append one row per test case to ``out/results.csv``. A rerun skips cells whose rows are all
in the CSV, drops the rows of a cell that stopped half-written, and resumes a stopped training
from its checkpoint folder (``out/cells/<cell>/checkpoints``). ``out/bench.json`` ties the folder
to the data and to the settings that change results; a rerun with other settings is refused.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sugfw.atomic import atomic_path
from sugfw.data import Slice
from sugfw.errors import InvalidInputError
from sugfw.experiment.configs import FULL_SUPERVISION, BenchConfig
from sugfw.experiment.dataset import (
    CaseFiles,
    CaseSplit,
    PreparedCase,
    find_case_files,
    load_case,
    prepare_case,
    split_cases,
)
from sugfw.metrics import case_metrics
from sugfw.models import resolve_device
from sugfw.pipeline import RecordScorer, score_to_index
from sugfw.records import RecordIndex
from sugfw.segmentation.infer import predict_volume
from sugfw.segmentation.train import TrainConfig, TrainResult, case_dice_validator, train
from sugfw.segmentation.unet import UNet
from sugfw.selection import Selection, get_strategy, resolve_budget, tie_share

log = logging.getLogger(__name__)

RESULTS_FILE, SETTINGS_FILE, RECORDS_FILE = "results.csv", "bench.json", "records.npz"
METRIC_COLUMNS = (
    "case_id",
    "dice",
    "hd95_mm",
    "dice_paper",
    "hd95_paper_voxels",
    "pred_empty",
    "truth_empty",
    "best_val_dice",
    "iterations",
)
"""The columns of a results row that come from training and testing (not from selection)."""
RESULT_COLUMNS = (
    "strategy",
    "budget",
    "seed",
    "n_selected",
    "pool_size",
    *METRIC_COLUMNS,
    "picks_foreground",
    "first_pick_foreground",
    "picks_tied",
    "pool_tied",
    "pool_foreground",
    "cluster_sizes",
    "picks_key",
)
"""``dice``/``hd95_mm``: physical rule (spacing-aware, explicit empty-mask rule); ``*_paper``: the
authors' convention (HD95 in voxels, empty prediction scored 0/0). See ``sugfw.metrics``.
Selection diagnostics, computed from the pool labels only after selection and repeated on every
row of a cell: ``picks_foreground`` (share of picks with foreground), ``first_pick_foreground``
(1 if the first pick has foreground), ``picks_tied``/``pool_tied`` (share at Û = 0.5),
``pool_foreground`` and ``cluster_sizes`` (sizes of the strategy's clusters, largest first,
";"-separated; empty for a strategy without clusters). ``picks_key``: the training set's
identity (``picks_key``), so the report counts identical training sets once."""


ScorerFactory = Callable[[BenchConfig, Path], RecordScorer]
"""(config, cache folder) -> scorer."""


@dataclass(frozen=True)
class Cell:
    strategy: str
    budget: int | float | None
    """None for full supervision (every pool slice)."""
    seed: int

    @property
    def key(self) -> tuple[str, str, str]:
        """(strategy, budget, seed) as written in results.csv."""
        return self.strategy, budget_label(self.budget), str(self.seed)

    @property
    def folder_name(self) -> str:
        return f"{self.strategy}_b{budget_label(self.budget)}_s{self.seed}"


@dataclass
class TrainingPool:
    """The selectable slices: every ``slice_step``-th slice of each training case's range."""

    images: list[np.ndarray]
    labels: list[np.ndarray]
    case_ids: list[str]
    slice_indices: list[int]

    @property
    def slice_ids(self) -> list[str]:
        return [f"{case}_z{index:03d}" for case, index in zip(self.case_ids, self.slice_indices)]


def budget_label(budget: int | float | None) -> str:
    """Budget as text: "all" (full supervision), "35" (count) or "0.05" (ratio, Python's repr)."""
    return "all" if budget is None else repr(budget)


def plan_cells(config: BenchConfig) -> list[Cell]:
    """Every strategy × budget × its seeds, then full supervision (first seed) if configured.

    Ordered by budget, then by seed rank, then by strategy, so that a run stopped part-way has
    the same number of seeds for every strategy at the budgets it reached.
    """
    cells = [
        Cell(strategy, budget, seeds[rank])
        for budget in config.budgets
        for rank in range(max(len(config.seeds_for(s)) for s in config.strategies))
        for strategy in config.strategies
        if rank < len(seeds := config.seeds_for(strategy))
    ]
    if config.full_supervision:
        # With sub-pools every replicate has its own full-supervision reference.
        replicates = config.seeds if config.subpool_cases is not None else config.seeds[:1]
        cells.extend(Cell(FULL_SUPERVISION, None, seed) for seed in replicates)
    return cells


def plan_split(files: list[CaseFiles], config: BenchConfig) -> CaseSplit:
    """Training/validation/test case ids. Labelled ``imagesTs`` cases, when the data set has
    them, are the test pool (a seeded choice of ``n_test``); otherwise test cases come from the
    split. ``max_train_cases`` keeps the first (sorted) training cases."""
    train_ids = [f.case_id for f in files if f.subset == "train"]
    provided_test = sorted(f.case_id for f in files if f.subset == "test")
    split = split_cases(
        train_ids, config.n_val, 0 if provided_test else config.n_test, config.split_seed
    )
    test = split.test
    if provided_test:
        order = np.random.default_rng(config.split_seed).permutation(len(provided_test))
        test = tuple(sorted(provided_test[i] for i in order[: config.n_test]))
    train_cases = split.train[: config.max_train_cases] if config.max_train_cases else split.train
    return CaseSplit(train_cases, split.val, test)


def build_pool(cases: Iterable[PreparedCase], slice_step: int) -> TrainingPool:
    pool = TrainingPool([], [], [], [])
    for case in cases:
        for position in range(0, len(case.images), slice_step):
            pool.images.append(case.images[position])
            pool.labels.append(case.labels[position])
            pool.case_ids.append(case.case_id)
            pool.slice_indices.append(int(case.slice_indices[position]))
    return pool


def subpool(case_ids: Sequence[str], n_cases: int | None, seed: int) -> np.ndarray:
    """Pool positions (in pool order) of ``n_cases`` of the pool's cases drawn with ``seed``.

    A function of the pool's case list and the seed alone, so every arm of a replicate sees the
    same sub-pool. ``n_cases`` None (or at least the number of cases): the whole pool.
    """
    cases = sorted(set(case_ids))
    if n_cases is None or n_cases >= len(cases):
        return np.arange(len(case_ids))
    chosen = set(np.random.default_rng(seed).choice(cases, size=n_cases, replace=False).tolist())
    return np.array([i for i, case in enumerate(case_ids) if case in chosen], dtype=np.int64)


def picks_key(train_seed: int, slice_ids: Iterable[str]) -> str:
    """Identity of a training set: the training seed and the sorted slice ids, hashed. Cells with
    the same key train the same model, so the report counts them once."""
    text = json.dumps([train_seed, sorted(slice_ids)])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def score_pool(pool: TrainingPool, scorer: RecordScorer, progress: bool = True) -> RecordIndex:
    """One record per pool slice (cached by content inside the scorer), as a RecordIndex."""
    slices = (
        Slice(slice_id, image, case_id, slice_index, None, "pool")
        for image, slice_id, case_id, slice_index in zip(
            pool.images, pool.slice_ids, pool.case_ids, pool.slice_indices
        )
    )
    return score_to_index(scorer, slices, progress, total=len(pool.images))


def select_queue(cell: Cell, index: RecordIndex) -> Selection:
    """The cell's Selection (full supervision: every slice in pool order, no clusters)."""
    n = len(index.slice_ids)
    if cell.strategy == FULL_SUPERVISION:
        return Selection(np.arange(n), np.full(n, -1, dtype=np.int64), n)
    spec = get_strategy(cell.strategy)
    budget = resolve_budget(cell.budget, n)
    return spec.run(index, budget, cell.seed)


def selection_diagnostics(
    selection: Selection, uncertainty: np.ndarray, pool_labels: list[np.ndarray]
) -> dict[str, object]:
    """What was picked, judged with the labels only after selecting (see ``RESULT_COLUMNS``)."""
    has_foreground = np.array([bool(np.any(label > 0)) for label in pool_labels])
    picks = selection.picks
    clusters = selection.clusters[selection.clusters >= 0]
    sizes = sorted(np.bincount(clusters).tolist(), reverse=True) if clusters.size else []
    return {
        "picks_foreground": float(has_foreground[picks].mean()),
        "first_pick_foreground": int(has_foreground[picks[0]]),
        "picks_tied": tie_share(uncertainty[picks]),
        "pool_tied": tie_share(uncertainty),
        "pool_foreground": float(has_foreground.mean()),
        "cluster_sizes": ";".join(str(size) for size in sizes if size),
    }


def predict_case(
    model: torch.nn.Module, case: PreparedCase, device: str, batch_size: int = 16
) -> np.ndarray:
    """(H, W, Z') bool foreground at the original resolution: class scores of each working-size
    slice are resized bilinearly to the original slice size, then the argmax is taken."""
    labels = predict_volume(model, case.images, device, batch_size, output_size=case.original_size)
    return np.moveaxis(labels > 0, 0, -1)


def default_scorer_factory(config: BenchConfig, cache_dir: Path) -> RecordScorer:
    """The configured SAM-family model with the record cache in ``cache_dir``."""
    return config.scorer_spec().build(cache_dir)


@dataclass
class BenchData:
    """What every cell reads: the scored pool, the validation volumes and the test cases."""

    split: CaseSplit
    pool: TrainingPool
    index: RecordIndex
    val: list[tuple[np.ndarray, np.ndarray]]
    test_cases: list[PreparedCase]
    device: str


def prepare_bench(
    config: BenchConfig,
    data_root: Path | str,
    out_dir: Path,
    scorer_factory: ScorerFactory = default_scorer_factory,
    progress: bool = True,
    test_data: Path | str | None = None,
) -> BenchData:
    """Split the cases, prepare them, score the pool (cached in ``out_dir/cache``) and save its
    index: the shared first step of the strategy benchmark and the multi-round one."""
    device = str(resolve_device(config.device))
    files = {f.case_id: f for f in find_case_files(data_root)}
    test_files = files
    if test_data is not None:
        test_files = {f.case_id: f for f in find_case_files(test_data)}
        train_ids = [f.case_id for f in files.values() if f.subset == "train"]
        own = split_cases(train_ids, config.n_val, 0, config.split_seed)
        order = np.random.default_rng(config.split_seed).permutation(len(test_files))
        chosen = tuple(sorted(sorted(test_files)[i] for i in order[: config.n_test]))
        train_cases = own.train[: config.max_train_cases] if config.max_train_cases else own.train
        split = CaseSplit(train_cases, own.val, chosen)
    else:
        split = plan_split(list(files.values()), config)
    log.info("cases: %d train, %d val, %d test", len(split.train), len(split.val), len(split.test))

    def prepare(case_files: CaseFiles) -> PreparedCase:
        return prepare_case(
            load_case(case_files),
            config.working_size,
            config.foreground_margin,
            config.upper_percentile,
        )

    prepared = {case_id: prepare(files[case_id]) for case_id in (*split.train, *split.val)}
    tested = {case_id: prepare(test_files[case_id]) for case_id in split.test}
    empty = [c for c in split.val if len(prepared[c].images) == 0]
    empty += [c for c in split.test if len(tested[c].images) == 0]
    if empty:
        # With a foreground margin a case without foreground keeps no slice: nothing to score it on.
        raise InvalidInputError(
            f"validation/test case(s) {empty} have no foreground slice in {data_root}; expected "
            "every evaluated case to contain the structure (or set foreground_margin=None)"
        )
    pool = build_pool((prepared[c] for c in split.train), config.slice_step)
    if not pool.images:
        raise InvalidInputError(
            f"the training cases {split.train} hold no foreground slices to select from"
        )
    index = score_pool(pool, scorer_factory(config, out_dir / "cache"), progress)
    index.save(out_dir / RECORDS_FILE)
    val = [(prepared[c].images, prepared[c].labels) for c in split.val]
    return BenchData(split, pool, index, val, [tested[c] for c in split.test], device)


def run_bench(
    config: BenchConfig,
    data_root: Path | str,
    out_dir: Path | str,
    scorer_factory: ScorerFactory = default_scorer_factory,
    progress: bool = True,
    test_data: Path | str | None = None,
) -> Path:
    """Run (or resume) every cell of ``config`` on the data set at ``data_root``; returns the
    path of results.csv. With ``test_data`` (a labelled folder of the same layouts), every cell
    is tested on ``n_test`` of its cases (a seeded choice) and ``data_root`` gives only the
    training and validation cases."""
    out_dir = Path(out_dir)
    for strategy in config.strategies:
        get_strategy(strategy)  # unknown names fail before any data is read
    out_dir.mkdir(parents=True, exist_ok=True)
    _bind_results_folder(
        config,
        Path(data_root),
        out_dir / SETTINGS_FILE,
        Path(test_data) if test_data is not None else None,
    )
    data = prepare_bench(config, data_root, out_dir, scorer_factory, progress, test_data)
    results = ResultsTable(out_dir / RESULTS_FILE, data.split.test)
    trained: dict[tuple[int, tuple[int, ...]], list[dict[str, object]]] = {}
    for cell in plan_cells(config):
        if results.is_done(cell):
            log.info("%s: already in %s, skipped", cell.folder_name, results.path.name)
            continue
        started = time.perf_counter()
        rows = _run_cell(
            cell,
            config,
            data.index,
            data.pool,
            data.val,
            data.test_cases,
            out_dir / "cells" / cell.folder_name,
            data.device,
            progress,
            trained,
        )
        results.append(rows)
        log.info("%s: done in %.0f s", cell.folder_name, time.perf_counter() - started)
    return results.path


def _run_cell(
    cell: Cell,
    config: BenchConfig,
    index: RecordIndex,
    pool: TrainingPool,
    val: list[tuple[np.ndarray, np.ndarray]],
    test_cases: list[PreparedCase],
    cell_dir: Path,
    device: str,
    progress: bool,
    trained: dict[tuple[int, tuple[int, ...]], list[dict[str, object]]] | None = None,
) -> list[dict[str, object]]:
    """Select (from the cell's sub-pool), train on the picks, test. ``trained`` maps (training
    seed, pick set) to test metrics: the same set trained with the same seed gives the same
    model, so it is reused."""
    positions = subpool(list(index.case_ids), config.subpool_cases, cell.seed)
    selection = select_queue(cell, index.subset(positions))
    picks = positions[selection.picks]  # back to whole-pool positions
    diagnostics = selection_diagnostics(
        selection, index.uncertainty[positions], [pool.labels[i] for i in positions]
    )
    cell_dir.mkdir(parents=True, exist_ok=True)
    (cell_dir / "picks.json").write_text(
        json.dumps([str(index.slice_ids[i]) for i in picks], indent=1)
    )
    (cell_dir / "selection.json").write_text(json.dumps(diagnostics, indent=1))
    # Trained in pool order, so cells that picked the same set in another order train the same.
    chosen = tuple(sorted(int(i) for i in picks))
    train_config = config.train_config(len(chosen), cell.seed, device)
    key = (train_config.seed, chosen)
    trained = {} if trained is None else trained
    if key not in trained:
        trained[key] = _train_and_test(
            chosen, train_config, config.batch_size, pool, val, test_cases, cell_dir, progress
        )
    else:
        log.info("%s: same picks as an earlier cell; its test results reused", cell.folder_name)
    strategy, budget, seed = cell.key
    return [
        {
            "strategy": strategy,
            "budget": budget,
            "seed": seed,
            "n_selected": len(picks),
            "pool_size": len(positions),
            "picks_key": picks_key(train_config.seed, (str(index.slice_ids[i]) for i in chosen)),
            **metrics,
            **diagnostics,
        }
        for metrics in trained[key]
    ]


def _train_and_test(
    chosen: tuple[int, ...],
    train_config: TrainConfig,
    batch_size: int,
    pool: TrainingPool,
    val: list[tuple[np.ndarray, np.ndarray]],
    test_cases: list[PreparedCase],
    cell_dir: Path,
    progress: bool,
) -> list[dict[str, object]]:
    """Per test case: DSC/HD95 of a UNet trained on the pool slices ``chosen``."""
    model, result = train_on_picks(chosen, train_config, pool, val, cell_dir, progress)
    return case_result_rows(model, result, train_config, test_cases, batch_size)


def train_on_picks(
    chosen: Sequence[int],
    train_config: TrainConfig,
    pool: TrainingPool,
    val: list[tuple[np.ndarray, np.ndarray]],
    cell_dir: Path,
    progress: bool,
) -> tuple[UNet, TrainResult]:
    """A UNet trained on the pool slices ``chosen``, with its best validation weights loaded
    (mean 3-D Dice over the validation cases; an empty prediction of a case scores 0)."""
    validator = case_dice_validator(val, train_config)
    result = train(
        [pool.images[i] for i in chosen],
        [pool.labels[i] for i in chosen],
        validator,
        train_config,
        cell_dir / "checkpoints",
        progress=progress,
    )
    model = UNet(in_channels=1, n_classes=train_config.n_classes, norm=train_config.norm)
    model.load_state_dict(result.best_state)
    return model, result


def case_result_rows(
    model: UNet,
    result: TrainResult,
    train_config: TrainConfig,
    test_cases: list[PreparedCase],
    batch_size: int,
) -> list[dict[str, object]]:
    """One results row (metrics columns) per test case."""
    rows = []
    for case in test_cases:
        prediction = predict_case(model, case, train_config.device, batch_size)
        physical = case_metrics(prediction, case.truth, case.spacing, rule="physical")
        paper = case_metrics(prediction, case.truth, case.spacing, rule="paper")
        rows.append(
            {
                "case_id": case.case_id,
                "dice": physical.dice,
                "hd95_mm": physical.hd95,
                "dice_paper": paper.dice,
                "hd95_paper_voxels": paper.hd95,
                "pred_empty": int(physical.pred_empty),
                "truth_empty": int(physical.truth_empty),
                "best_val_dice": result.best_val_dice,
                "iterations": train_config.iterations,
            }
        )
    return rows


class ResultsTable:
    """results.csv: one row per (cell, test case). A cell is done when it has a row for every
    test case; rows of a partly written cell are dropped on opening, so it is rerun cleanly."""

    def __init__(self, path: Path, test_case_ids: Iterable[str]) -> None:
        self.path = path
        self._test_cases = frozenset(test_case_ids)
        self._done: set[tuple[str, str, str]] = set()
        if path.exists() and path.stat().st_size > 0:
            self._load()
        else:
            self._write_rows([], mode="w")

    def is_done(self, cell: Cell) -> bool:
        return cell.key in self._done

    def append(self, rows: list[dict[str, object]]) -> None:
        self._write_rows(rows, mode="a", header=False)
        self._done.update((str(r["strategy"]), str(r["budget"]), str(r["seed"])) for r in rows)

    def _load(self) -> None:
        with self.path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            if tuple(reader.fieldnames or ()) != RESULT_COLUMNS:
                raise InvalidInputError(
                    f"{self.path} has columns {reader.fieldnames}; expected {list(RESULT_COLUMNS)} "
                    "(a results file of another version, or not one at all): use another --out"
                )
            rows = list(reader)
        cases_by_cell: dict[tuple[str, str, str], set[str]] = defaultdict(set)
        for row in rows:
            cases_by_cell[(row["strategy"], row["budget"], row["seed"])].add(row["case_id"])
        self._done = {key for key, cases in cases_by_cell.items() if cases == self._test_cases}
        kept = [row for row in rows if (row["strategy"], row["budget"], row["seed"]) in self._done]
        if len(kept) != len(rows):
            log.warning(
                "%s: dropping %d rows of unfinished cells", self.path, len(rows) - len(kept)
            )
            with atomic_path(self.path) as tmp, tmp.open("w", newline="") as handle:
                writer = csv.DictWriter(handle, RESULT_COLUMNS)
                writer.writeheader()
                writer.writerows(kept)

    def _write_rows(self, rows: list[dict[str, object]], mode: str, header: bool = True) -> None:
        # One write per cell, flushed to disk: an interruption loses at most that cell's rows.
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, RESULT_COLUMNS)
        if header:
            writer.writeheader()
        writer.writerows(rows)
        with self.path.open(mode, newline="") as handle:
            handle.write(buffer.getvalue())
            handle.flush()
            os.fsync(handle.fileno())


def _bind_results_folder(
    config: BenchConfig, data_root: Path, path: Path, test_data: Path | None = None
) -> None:
    identity = {"data": str(data_root.resolve()), **config.result_identity()}
    identity["test_data"] = str(test_data.resolve()) if test_data is not None else None
    identity = json.loads(json.dumps(identity))
    if not path.exists():
        path.write_text(json.dumps(identity, indent=2, sort_keys=True))
        return
    stored = json.loads(path.read_text())
    changed = sorted(k for k in identity.keys() | stored.keys() if identity.get(k) != stored.get(k))
    if changed:
        detail = ", ".join(f"{k}: {stored.get(k)!r} -> {identity.get(k)!r}" for k in changed)
        raise InvalidInputError(
            f"{path.parent} holds results of other settings ({detail}); use another output folder "
            "or the same settings"
        )
