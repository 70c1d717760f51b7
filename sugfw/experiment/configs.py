"""Named benchmark configurations: the paper's protocol for a GPU, and a scaled-down CPU run.

``CONFIGS["paper"]`` follows the paper for Promise12 (50/20/30 cases, foreground slices ± 2,
256² slices, crop 224, K = 10, batch 8 for 1000 epochs, Random over 5 seeds).
``CONFIGS["paper_la2018"]`` is the same protocol for UTAH as distributed in LA2018 (80 labelled
cases, so 50/10/20 by case instead of the paper's 80/20 + 54 test cases; budgets 0.5/1/1.5 %;
slices of that preprocessing are ≈ 200 × 150, so working size 256 and crop 224 rather than the
paper's 512/480).

``CONFIGS["cpu"]`` runs every strategy, the three GSCU ablations and full supervision on LA2018
in about 1.5 h on a 2-core CPU:
- Pool: the first 8 training cases of the split, every 8th slice of their foreground range ± 2
  (62 slices); 1 validation case and 4 test cases at their whole foreground range.
- Scoring (LiteMedSAM, default box grid, K = 2, so 3 everything-mode runs per slice): 25 s per
  slice measured, 26 min for the pool, once for all strategies (the record cache is shared).
- Cells: Random × 5 seeds × 3 budgets + 9 other strategies × 3 budgets + full supervision = 43.
- UNet: 300 iterations at crop 128, batch 8 (≈ 5 iterations per second measured), validation
  every 100 iterations, then prediction of the 4 test cases: 89 s per cell on average, 63 min in
  all (other jobs shared the cores part of the time). About 1.5 h for the whole run.
Shorter training than the paper's (300 iterations instead of 1000 epochs) leaves the UNet
under-trained: compare strategies with one another and with full supervision at the same
training length, not with the paper's absolute figures.

``CONFIGS["cpu_realistic"]`` is the realistic protocol (no label-based filtering): pool = every
11th slice of the first 5 training cases (≈ 40 slices of 88-slice volumes), 1 validation and 10
test cases as whole volumes, Random over 10 seeds and GSCU / tie-aware GSCU over 5 k-means
seeds, one training seed for every cell, budgets of 4 and 8 slices, K = 2, 200 iterations.
``paper_la2018_realistic`` is the GPU-sized version of the same protocol.

``CONFIGS["cpu_replicates"]`` is the paired-replicate design for the few-slice learner: the scored
pool is every 11th slice of the first 10 training cases (80 slices at 128 px), and replicate r is
the sub-pool of ``subpool_cases`` = 5 of those cases drawn with seed r (≈ 40 slices) together with
UNet training seed r. Every arm of replicate r selects from that sub-pool (Random with seed r, the
k-means strategies with seed r) and trains with seed r, so arms are compared pairwise within a
replicate and replicates vary what varies in real use: the project's data and the training noise.
Training uses the few-slice recipe (``TrainConfig.few_slice``); 30 test cases, 1 validation case.
``CONFIGS["cpu_large_pool"]`` is the same design in the method's regime: every 4th slice of the
10 training cases (≈ 220 slices), sub-pools of 8 cases, budgets of 4, 8 and 16 slices.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from sugfw.errors import InvalidInputError
from sugfw.pipeline import ScorerSpec
from sugfw.segmentation.train import RECIPES, TrainConfig, iterations_for_epochs, recipe_config
from sugfw.selection.budget import check_budget

RANDOM_STRATEGY = "random"
FULL_SUPERVISION = "full_supervision"
"""Pseudo-strategy of the reference cell trained on every pool slice."""
# Fields that choose which cells run (or where), not what a cell computes: a results folder may be
# resumed with other values for these.
CELL_LIST_FIELDS = (
    "name",
    "strategies",
    "budgets",
    "seeds",
    "random_seeds",
    "full_supervision",
    "device",
)


@dataclass(frozen=True)
class BenchConfig:
    """Everything the benchmark runner needs: cells, data preparation, scoring and training."""

    name: str
    # Cells: every strategy × budget × seed, plus full supervision.
    strategies: tuple[str, ...]
    budgets: tuple[int | float, ...]
    """Counts (int) or ratios of the pool (float in (0, 1)), as ``resolve_budget`` reads them."""
    seeds: tuple[int, ...]
    """Seeds of the deterministic strategies' selection (k-means)."""
    random_seeds: tuple[int, ...]
    """Seeds of the Random strategy (the paper reports the mean over 5)."""
    full_supervision: bool = True
    # Data.
    n_val: int = 20
    n_test: int = 30
    split_seed: int = 0
    max_train_cases: int | None = None
    """Use only the first this many training cases of the split (None: all)."""
    foreground_margin: int | None = 2
    """Keep the foreground z-range ± this many slices in every case (None: all slices)."""
    slice_step: int = 1
    """Keep every n-th slice of each training case's range in the pool (validation/test keep
    all)."""
    working_size: int | None = 256
    upper_percentile: float = 99.5
    # Scoring.
    model: str = "litemedsam"
    checkpoint: str | None = None
    k: int = 10
    grid: tuple[int, ...] | None = None
    """Everything-mode grid; None: the model's default."""
    scoring_seed: int = 0
    precision: str = "fp32"
    # Training.
    iterations: int | None = None
    """Fixed iteration count; None: ``epochs`` × ceil(selected slices / batch size)."""
    epochs: int = 1000
    batch_size: int = 8
    crop_size: int = 224
    eval_every: int = 200
    train_seed: int | None = 2025
    """UNet seed of every cell, so cells differ only in what they selected; None: the cell's seed
    (selection noise and initialisation noise mixed)."""
    device: str = "auto"
    recipe: str = "paper"
    """Training recipe (``sugfw.segmentation.train.RECIPES``); batch size and validation interval
    come from this config either way, the crop only for "paper" (few_slice: whole slices)."""
    subpool_cases: int | None = None
    """Replicate design: a cell with seed r selects from the pool slices of ``subpool_cases``
    training cases drawn with seed r (``subpool``); None: from the whole pool."""

    def __post_init__(self) -> None:
        for name in ("strategies", "budgets", "seeds"):
            if not getattr(self, name):
                raise InvalidInputError(f"BenchConfig.{name} is empty; expected at least one value")
        if RANDOM_STRATEGY in self.strategies and not self.random_seeds:
            raise InvalidInputError(
                "BenchConfig.random_seeds is empty but 'random' is among the strategies"
            )
        for budget in self.budgets:
            check_budget(budget)
        for name in (
            "n_val",
            "n_test",
            "slice_step",
            "k",
            "epochs",
            "batch_size",
            "crop_size",
            "eval_every",
        ):
            if getattr(self, name) < 1:
                raise InvalidInputError(
                    f"BenchConfig.{name} must be >= 1, got {getattr(self, name)}"
                )
        for name in ("max_train_cases", "iterations"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise InvalidInputError(f"BenchConfig.{name} must be >= 1, got {value}")
        if self.recipe not in RECIPES:
            raise InvalidInputError(
                f"BenchConfig.recipe must be one of {RECIPES}, got {self.recipe!r}"
            )
        if self.subpool_cases is not None and self.subpool_cases < 1:
            raise InvalidInputError(
                f"BenchConfig.subpool_cases must be >= 1, got {self.subpool_cases}"
            )
        if self.foreground_margin is not None and self.foreground_margin < 0:
            raise InvalidInputError(
                f"BenchConfig.foreground_margin must be >= 0, got {self.foreground_margin}"
            )

    def seeds_for(self, strategy: str) -> tuple[int, ...]:
        return self.random_seeds if strategy == RANDOM_STRATEGY else self.seeds

    def scorer_spec(self) -> ScorerSpec:
        """How the pool is scored: model, weights, grid, K, seed and precision of this config."""
        return ScorerSpec(
            model=self.model,
            checkpoint=Path(self.checkpoint) if self.checkpoint else None,
            device=self.device,
            k=self.k,
            seed=self.scoring_seed,
            grid=self.grid,
            precision=self.precision,
        )

    def train_config(self, n_train: int, seed: int, device: str) -> TrainConfig:
        """Training of a cell with selection seed ``seed`` (used only when ``train_seed`` is
        None)."""
        seed = seed if self.train_seed is None else self.train_seed
        iterations = self.iterations or iterations_for_epochs(self.epochs, n_train, self.batch_size)
        shared = {
            "batch_size": self.batch_size,
            "eval_every": self.eval_every,
            "seed": seed,
            "device": device,
        }
        if self.recipe == "paper":
            shared["crop_size"] = self.crop_size
        return recipe_config(self.recipe, iterations, **shared)

    def with_overrides(self, **overrides: Any) -> BenchConfig:
        """A copy with the given fields replaced; ``None`` values are ignored (CLI defaults)."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise InvalidInputError(
                f"unknown BenchConfig field(s) {unknown}; expected some of {sorted(known)}"
            )
        changes = {
            key: tuple(value) if isinstance(value, list) else value
            for key, value in overrides.items()
            if value is not None
        }
        return replace(self, **changes)

    def result_identity(self) -> dict[str, Any]:
        """The fields that change what a cell computes; a results folder is tied to them."""
        return {key: value for key, value in asdict(self).items() if key not in CELL_LIST_FIELDS}


PAPER = BenchConfig(
    name="paper",
    strategies=("random", "probcover", "fps", "typiclust", "calr", "alps", "gscu"),
    budgets=(0.05, 0.10, 0.15),
    seeds=(2025,),
    random_seeds=(0, 1, 2, 3, 4),
    n_val=20,
    n_test=30,
    k=10,
    working_size=256,
    crop_size=224,
    epochs=1000,
    batch_size=8,
    eval_every=200,
)

CPU = BenchConfig(
    name="cpu",
    strategies=(
        "random",
        "probcover",
        "fps",
        "typiclust",
        "calr",
        "alps",
        "gscu",
        "gscu_no_pgdr",
        "gscu_no_clustering",
        "gscu_no_greedy",
    ),
    budgets=(0.05, 0.10, 0.15),
    seeds=(2025,),
    random_seeds=(0, 1, 2, 3, 4),
    n_val=1,
    n_test=4,
    max_train_cases=8,
    slice_step=8,
    k=2,
    working_size=256,
    iterations=300,
    batch_size=8,
    crop_size=128,
    eval_every=100,
    device="cpu",
)

PAPER_LA2018 = replace(
    PAPER,
    name="paper_la2018",
    budgets=(0.005, 0.01, 0.015),
    n_val=10,
    n_test=20,
)

# The realistic protocol: a cold-start user has no labels, so the pool is every n-th slice of the
# training volumes with no foreground range; validation and test cases are whole volumes too.
CPU_REALISTIC = BenchConfig(
    name="cpu_realistic",
    strategies=("random", "gscu", "gscu_content_aware"),
    budgets=(4, 8),
    seeds=(0, 1, 2, 3, 4),
    random_seeds=tuple(range(10)),
    full_supervision=False,
    n_val=1,
    n_test=10,
    max_train_cases=5,
    foreground_margin=None,
    slice_step=11,
    k=2,
    working_size=256,
    iterations=200,
    batch_size=8,
    crop_size=128,
    eval_every=100,
    device="cpu",
)

PAPER_LA2018_REALISTIC = replace(
    PAPER_LA2018,
    name="paper_la2018_realistic",
    foreground_margin=None,
    strategies=PAPER_LA2018.strategies + ("gscu_tie_aware",),
    seeds=(2025, 2026, 2027, 2028, 2029),
    random_seeds=tuple(range(10)),
)

CPU_REPLICATES = BenchConfig(
    name="cpu_replicates",
    strategies=("random", "gscu", "gscu_content_aware", "alps", "typiclust"),
    budgets=(4, 8),
    seeds=(0, 1, 2, 3, 4, 5),
    random_seeds=(0, 1, 2, 3, 4, 5),
    full_supervision=True,
    n_val=1,
    n_test=30,
    max_train_cases=10,
    foreground_margin=None,
    slice_step=11,
    k=2,
    working_size=128,
    iterations=300,
    batch_size=8,
    eval_every=25,
    train_seed=None,
    recipe="few_slice",
    subpool_cases=5,
    device="cpu",
)

# The method's regime: tens of slices picked from hundreds. Every 4th slice of 10 training cases
# (≈ 220 slices), sub-pools of 8 cases (≈ 176), budgets 4, 8 and 16.
CPU_LARGE_POOL = replace(
    CPU_REPLICATES,
    name="cpu_large_pool",
    budgets=(4, 8, 16),
    slice_step=4,
    subpool_cases=8,
)

CONFIGS: dict[str, BenchConfig] = {
    "cpu": CPU,
    "cpu_realistic": CPU_REALISTIC,
    "cpu_replicates": CPU_REPLICATES,
    "cpu_large_pool": CPU_LARGE_POOL,
    "paper": PAPER,
    "paper_la2018": PAPER_LA2018,
    "paper_la2018_realistic": PAPER_LA2018_REALISTIC,
}
