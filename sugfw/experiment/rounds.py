"""The multi-round benchmark: a cold start, then rounds of a round strategy, against Random.

For each seed s: the cold start picks ``config.budgets[0]`` slices with ``cold_start`` (k-means
seed s) and a UNet is trained on them; then each of R rounds adds ``round_budget`` unlabelled pool
slices, chosen by the round strategy from the previous round's UNet (or at random, seeded by s and
the round, for the reference), and a UNet is trained again on everything chosen so far. Both arms
share seed s's cold start, so round 0 is the same model for both (a difference of exactly 0).

Every training starts from scratch with the config's one training seed, so two arms differ only
in the slices they chose (the backend warm-starts instead, which is faster but mixes in the order
of the rounds). Rows go to ``rounds.csv`` in the results schema of the strategy benchmark, with
``budget`` = slices labelled after the round, so the same report (mean ± std over seeds, bootstrap
95 % interval of the difference from ``random``, DSC against budget) reads it, led by the paired
table (``sugfw.experiment.paired``: differences within each seed, so round 0 gives exactly 0).
The folder can be the strategy benchmark's: the scored pool and its cache are shared.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np

from sugfw.active import rank_unlabelled, unet_signals
from sugfw.active.round_strategies import NEEDS_UNET, check_round_strategy
from sugfw.active.unet_signals import DEFAULT_PASSES
from sugfw.errors import InvalidInputError
from sugfw.experiment.configs import RANDOM_STRATEGY, BenchConfig
from sugfw.experiment.report import load_results
from sugfw.experiment.runner import (
    METRIC_COLUMNS,
    RESULTS_FILE,
    SETTINGS_FILE,
    BenchData,
    Cell,
    ResultsTable,
    ScorerFactory,
    _bind_results_folder,
    case_result_rows,
    default_scorer_factory,
    prepare_bench,
    select_queue,
    train_on_picks,
)
from sugfw.segmentation.train import BEST_CHECKPOINT, load_trained_unet
from sugfw.selection import get_strategy

log = logging.getLogger(__name__)

ROUNDS_FILE = "rounds.csv"
RECOMMENDED_COLD_START = "gscu_content_aware"


def run_rounds(
    config: BenchConfig,
    data_root: Path | str,
    out_dir: Path | str,
    rounds: int,
    round_budget: int,
    round_strategy: str,
    cold_start: str = RECOMMENDED_COLD_START,
    scorer_factory: ScorerFactory = default_scorer_factory,
    progress: bool = True,
    test_data: Path | str | None = None,
    passes: int = DEFAULT_PASSES,
) -> Path:
    """Run (or resume) the rounds for every seed of ``config.seeds``; returns rounds.csv."""
    if rounds < 1 or round_budget < 1:
        raise InvalidInputError(
            f"--rounds and --round-budget must be >= 1, got {rounds} and {round_budget}"
        )
    check_round_strategy(round_strategy)
    if round_strategy == RANDOM_STRATEGY:
        raise InvalidInputError("random rounds are the reference; choose another round strategy")
    get_strategy(cold_start)
    start_budget = config.budgets[0]
    if not isinstance(start_budget, int):
        raise InvalidInputError(f"the cold start needs a slice count, got budget {start_budget}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    test_path = Path(test_data) if test_data is not None else None
    _bind_results_folder(config, Path(data_root), out_dir / SETTINGS_FILE, test_path)
    data = prepare_bench(config, data_root, out_dir, scorer_factory, progress, test_data)
    n_pool = len(data.pool.images)
    if start_budget + rounds * round_budget > n_pool:
        raise InvalidInputError(
            f"{start_budget} + {rounds} × {round_budget} slices exceed the pool of {n_pool}"
        )
    results = ResultsTable(out_dir / ROUNDS_FILE, data.split.test)
    arms = _Arms(config, data, out_dir, results, progress, passes)
    for seed in config.seeds:
        cold_cell = Cell(cold_start, start_budget, seed)
        cold = select_queue(cold_cell, data.index)
        arms.adopt(cold_cell, cold.picks)
        for strategy in (round_strategy, RANDOM_STRATEGY):
            arms.run(strategy, seed, cold.picks, cold.ranks(), rounds, round_budget)
    return results.path


class _Arms:
    """Runs one arm (strategy, seed) round by round; trainings of identical sets are shared."""

    def __init__(
        self,
        config: BenchConfig,
        data: BenchData,
        out_dir: Path,
        results: ResultsTable,
        progress: bool,
        passes: int,
    ) -> None:
        self.config, self.data, self.out_dir = config, data, out_dir
        self.results, self.progress, self.passes = results, progress, passes
        self._trained: dict[tuple[int, ...], tuple[list[dict[str, object]], Path]] = {}

    def adopt(self, cell: Cell, picks: np.ndarray) -> None:
        """Reuse the strategy benchmark's training of the cold start when this folder holds it
        (same picks, same settings: the same model), instead of training it again."""
        checkpoint = self.out_dir / "cells" / cell.folder_name / "checkpoints" / BEST_CHECKPOINT
        results = self.out_dir / RESULTS_FILE
        if not (checkpoint.is_file() and results.is_file()):
            return
        try:
            rows = [
                r
                for r in load_results(results)
                if (r["strategy"], r["budget"], r["seed"]) == cell.key
            ]
        except InvalidInputError:  # no row written yet
            return
        tested = {r["case_id"] for r in rows}
        if tested != {case.case_id for case in self.data.test_cases}:
            return
        metrics = [{column: r[column] for column in METRIC_COLUMNS} for r in rows]
        chosen = tuple(sorted(int(i) for i in picks))
        self._trained.setdefault(chosen, (metrics, checkpoint))

    def run(
        self,
        strategy: str,
        seed: int,
        cold_picks: np.ndarray,
        cold_rank: np.ndarray,
        rounds: int,
        round_budget: int,
    ) -> None:
        chosen = sorted(int(i) for i in cold_picks)
        checkpoint: Path | None = None
        for round_index in range(rounds + 1):
            if round_index:
                chosen = self._next_picks(
                    strategy, seed, round_index, chosen, cold_rank, round_budget, checkpoint
                )
            cell = Cell(strategy, len(chosen), seed)
            cell_dir = self.out_dir / "cells" / f"rounds_{strategy}_r{round_index}_s{seed}"
            checkpoint = self._cell(cell, cell_dir, tuple(chosen), round_index)

    def _next_picks(
        self,
        strategy: str,
        seed: int,
        round_index: int,
        chosen: list[int],
        cold_rank: np.ndarray,
        round_budget: int,
        checkpoint: Path | None,
    ) -> list[int]:
        unlabelled = np.setdiff1d(np.arange(len(self.data.pool.images)), chosen)
        signals = None
        if strategy in NEEDS_UNET:
            assert checkpoint is not None
            model = load_trained_unet(checkpoint, self.data.device)
            images = np.stack([self.data.pool.images[i] for i in unlabelled])
            signals = unet_signals(model, images, self.passes, seed, self.data.device)
        order = rank_unlabelled(
            strategy, cold_rank[unlabelled], signals, round_budget, seed * 1000 + round_index
        )
        return sorted(chosen + [int(i) for i in unlabelled[order[:round_budget]]])

    def _cell(self, cell: Cell, cell_dir: Path, chosen: tuple[int, ...], round_index: int) -> Path:
        """Train and test on ``chosen`` (or reuse); the checkpoint of the round's UNet."""
        cell_dir.mkdir(parents=True, exist_ok=True)
        record = cell_dir / "round.json"
        if self.results.is_done(cell) and record.is_file():  # resumed: trained and tested before
            saved = json.loads(record.read_text())
            if saved["picks"] == list(chosen) and Path(saved["checkpoint"]).is_file():
                return Path(saved["checkpoint"])
        if chosen not in self._trained:
            self._trained[chosen] = self._train(cell, cell_dir, chosen)
        rows, checkpoint = self._trained[chosen]
        labels = self.data.pool.labels
        foreground = float(np.mean([labels[i].any() for i in chosen]))
        if not self.results.is_done(cell):
            self.results.append(
                [
                    {
                        "strategy": cell.strategy,
                        "budget": len(chosen),
                        "seed": cell.seed,
                        "n_selected": len(chosen),
                        "pool_size": len(labels),
                        **row,
                        "picks_foreground": foreground,
                        "cluster_sizes": f"round {round_index}",
                    }
                    for row in rows
                ]
            )
        record.write_text(json.dumps({"picks": list(chosen), "checkpoint": str(checkpoint)}))
        return checkpoint

    def _train(
        self, cell: Cell, cell_dir: Path, chosen: tuple[int, ...]
    ) -> tuple[list[dict[str, object]], Path]:
        config, data = self.config, self.data
        train_config = config.train_config(len(chosen), cell.seed, data.device)
        started = time.perf_counter()
        model, result = train_on_picks(
            chosen, train_config, data.pool, data.val, cell_dir, self.progress
        )
        rows = case_result_rows(model, result, train_config, data.test_cases, config.batch_size)
        log.info("%s: done in %.0f s", cell_dir.name, time.perf_counter() - started)
        return rows, cell_dir / "checkpoints" / BEST_CHECKPOINT
