"""Table 1 and Fig. 2 of the paper from results.csv: a markdown table and a DSC-against-budget plot.

Aggregation: for one seed, DSC and HD95 are mean ± std (population, ddof = 0) over the test
cases, as ``sugfw.metrics.summarise`` computes them. A strategy run with several seeds (Random:
5 in the paper) is shown as the mean over seeds of the per-seed means ± the mean over seeds of the
per-seed stds, so its ± stays a spread over cases, comparable with the single-seed rows. The plot's
band around such a strategy is its mean ± the std over seeds of the per-seed mean DSC.

Strategies against Random (``comparison_table``): per budget, the mean ± std (ddof = 1) over seeds
of the per-seed mean DSC, and a bootstrap 95 % interval of the strategy's mean DSC minus Random's:
each of ``N_BOOTSTRAP`` replicates resamples the test cases (the same cases for both, so the
comparison stays paired by case) and, independently, each strategy's seeds, with replacement;
the interval is the 2.5th–97.5th percentile of the replicated differences. The plot draws each
strategy's own bootstrap 95 % interval of its mean. ``diagnostics_table`` summarises what each
cell picked (labels used only after selection). Runs of the replicate design (``subpool_cases``
set) open with the paired table of ``sugfw.experiment.paired``: equal seeds are the same
replicate there, so arms are differenced within it.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from sugfw.errors import InvalidInputError
from sugfw.experiment.configs import FULL_SUPERVISION
from sugfw.experiment.paired import paired_table
from sugfw.experiment.runner import RESULT_COLUMNS, SETTINGS_FILE
from sugfw.metrics import CaseMetrics, summarise

Rule = Literal["physical", "paper"]
_COLUMNS = {
    "physical": ("dice", "hd95_mm", "mm"),
    "paper": ("dice_paper", "hd95_paper_voxels", "voxel"),
}
REPORT_FILE, PLOT_FILE = "report.md", "dsc_vs_budget.png"
N_BOOTSTRAP = 2000
BOOTSTRAP_SEED = 0
REFERENCE_STRATEGY = "random"


@dataclass(frozen=True)
class CellSummary:
    """One (strategy, budget) over its seeds; DSC as a fraction, HD95 in the rule's unit."""

    strategy: str
    budget: str
    n_seeds: int
    share: float
    """Selected slices / pool slices, mean over seeds."""
    dice_mean: float
    dice_std: float
    hd95_mean: float
    hd95_std: float
    dice_seed_std: float
    """Std over seeds of the per-seed mean DSC (0 for one seed)."""
    dice_seed_min: float
    dice_seed_max: float
    """Lowest and highest per-seed mean DSC."""


@dataclass(frozen=True)
class DscCurve:
    """One strategy's line of the plot: x in % of the pool, DSC in %."""

    share_percent: np.ndarray
    dice_percent: np.ndarray
    band_low: np.ndarray
    band_high: np.ndarray
    n_seeds: int


@dataclass(frozen=True)
class ReportFiles:
    markdown: Path
    plot: Path


def load_results(path: Path | str) -> list[dict[str, str]]:
    """Rows of a results.csv written by ``run_bench``."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"{path} does not exist; expected the results.csv of `sugfw bench`")
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        # picks_key came later; without it every training set counts as its own.
        missing = sorted(set(RESULT_COLUMNS) - set(reader.fieldnames or ()) - {"picks_key"})
        if missing:
            raise InvalidInputError(
                f"{path} lacks the columns {missing}; expected a results.csv of `sugfw bench`"
            )
        rows = [{"picks_key": "", **row} for row in reader]
    if not rows:
        raise InvalidInputError(f"{path} holds no results yet")
    return rows


def summarise_cells(rows: list[dict[str, str]], rule: Rule = "physical") -> list[CellSummary]:
    """One summary per (strategy, budget), in order of first appearance."""
    dice_column, hd95_column, unit = _rule_columns(rule)
    by_cell: dict[tuple[str, str], dict[str, list[dict[str, str]]]] = {}
    for row in rows:
        by_cell.setdefault((row["strategy"], row["budget"]), {}).setdefault(row["seed"], []).append(
            row
        )
    summaries = []
    for (strategy, budget), seeds in by_cell.items():
        per_seed = []
        for seed_rows in seeds.values():
            cases = [
                CaseMetrics(
                    float(r[dice_column]),
                    float(r[hd95_column]),
                    unit,
                    rule,
                    r["pred_empty"] == "1",
                    r["truth_empty"] == "1",
                )
                for r in seed_rows
            ]
            share = float(seed_rows[0]["n_selected"]) / float(seed_rows[0]["pool_size"])
            per_seed.append((summarise(cases), share))
        means = np.array([s["dice_mean"] for s, _ in per_seed])
        summaries.append(
            CellSummary(
                strategy=strategy,
                budget=budget,
                n_seeds=len(per_seed),
                share=float(np.mean([share for _, share in per_seed])),
                dice_mean=float(means.mean()),
                dice_std=float(np.mean([s["dice_std"] for s, _ in per_seed])),
                hd95_mean=float(np.mean([s["hd95_mean"] for s, _ in per_seed])),
                hd95_std=float(np.mean([s["hd95_std"] for s, _ in per_seed])),
                dice_seed_std=float(means.std()),
                dice_seed_min=float(means.min()),
                dice_seed_max=float(means.max()),
            )
        )
    return summaries


def markdown_table(rows: list[dict[str, str]], rule: Rule = "physical") -> str:
    """Table 1's shape: strategies × budgets, cells "DSC mean ± std / HD95 mean ± std", DSC in %,
    followed by a full-supervision line."""
    _, _, unit = _rule_columns(rule)
    summaries = summarise_cells(rows, rule)
    budgets = sorted(
        {s.budget for s in summaries if s.strategy != FULL_SUPERVISION}, key=_budget_order
    )
    strategies = list(
        dict.fromkeys(s.strategy for s in summaries if s.strategy != FULL_SUPERVISION)
    )
    cell = {(s.strategy, s.budget): s for s in summaries}
    lines = [
        f"DSC (%) / HD95 ({unit}), mean ± std over test cases ({rule} rule). Several seeds: mean "
        "over "
        "seeds of the per-seed mean ± the mean over seeds of the per-seed std.",
        "",
        "| strategy | " + " | ".join(_budget_header(b) for b in budgets) + " |",
        "|---|" + "---|" * len(budgets),
    ]
    for strategy in strategies:
        seeds = max(s.n_seeds for s in summaries if s.strategy == strategy)
        name = f"{strategy} (mean of {seeds} seeds)" if seeds > 1 else strategy
        values = [
            _format_cell(cell[(strategy, b)]) if (strategy, b) in cell else "–" for b in budgets
        ]
        lines.append(f"| {name} | " + " | ".join(values) + " |")
    full = [s for s in summaries if s.strategy == FULL_SUPERVISION]
    if full:
        n_slices = next(r["n_selected"] for r in rows if r["strategy"] == FULL_SUPERVISION)
        lines += [
            "",
            f"Full supervision ({n_slices} slices, the whole pool): {_format_cell(full[0])}",
        ]
    return "\n".join(lines) + "\n"


def dsc_curves(rows: list[dict[str, str]], rule: Rule = "physical") -> dict[str, DscCurve]:
    """Per strategy (not full supervision), points sorted by the selected share of the pool."""
    curves = {}
    summaries = [s for s in summarise_cells(rows, rule) if s.strategy != FULL_SUPERVISION]
    for strategy in dict.fromkeys(s.strategy for s in summaries):
        points = sorted((s for s in summaries if s.strategy == strategy), key=lambda s: s.share)
        dice = np.array([100 * s.dice_mean for s in points])
        band = np.array([100 * s.dice_seed_std for s in points])
        curves[strategy] = DscCurve(
            share_percent=np.array([100 * s.share for s in points]),
            dice_percent=dice,
            band_low=dice - band,
            band_high=dice + band,
            n_seeds=max(s.n_seeds for s in points),
        )
    return curves


def plot_dsc(rows: list[dict[str, str]], path: Path | str, rule: Rule = "physical") -> Path:
    """PNG (6 × 4 in at 120 dpi) of DSC against budget; multi-seed strategies with their band,
    full supervision as a dashed horizontal line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    figure, axes = plt.subplots(figsize=(6, 4), dpi=120)
    try:
        intervals = mean_intervals(rows, rule)
        for strategy, curve in dsc_curves(rows, rule).items():
            label = f"{strategy} (mean of {curve.n_seeds} seeds)" if curve.n_seeds > 1 else strategy
            (line,) = axes.plot(curve.share_percent, curve.dice_percent, marker="o", label=label)
            budgets = sorted(
                (s for s in summarise_cells(rows, rule) if s.strategy == strategy),
                key=lambda s: s.share,
            )
            low = np.array([100 * intervals[(strategy, b.budget)][0] for b in budgets])
            high = np.array([100 * intervals[(strategy, b.budget)][1] for b in budgets])
            yerr = np.vstack([curve.dice_percent - low, high - curve.dice_percent]).clip(min=0)
            axes.errorbar(
                curve.share_percent,
                curve.dice_percent,
                yerr=yerr,
                fmt="none",
                ecolor=line.get_color(),
                capsize=3,
            )
        full = [s for s in summarise_cells(rows, rule) if s.strategy == FULL_SUPERVISION]
        if full:
            axes.axhline(
                100 * full[0].dice_mean, color="black", linestyle="--", label="full supervision"
            )
        axes.set_xlabel("annotated slices (% of the pool)")
        axes.set_ylabel("DSC (%), bootstrap 95% interval")
        axes.grid(alpha=0.3)
        axes.legend(fontsize="small")
        figure.tight_layout()
        figure.savefig(path)
    finally:
        plt.close(figure)
    return path


def write_report(
    results_csv: Path | str, out_dir: Path | str, paired: bool | None = None
) -> ReportFiles:
    """report.md (tables under both metric rules) and dsc_vs_budget.png in ``out_dir``.

    ``paired``: whether equal seeds of different strategies are one replicate (the multi-round
    benchmark, whose arms share each seed's cold start, passes True); None: read it from the
    bench.json beside ``results_csv`` (sub-pool replicates)."""
    rows = load_results(results_csv)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    markdown = out_dir / REPORT_FILE
    if paired is None:
        paired = _replicate_design(Path(results_csv).parent)
    paired_text = paired_table(rows) if paired else ""
    markdown.write_text(
        "# Benchmark results\n\n"
        + (
            "## Paired by replicate (what a replicate's arms share: its seed's data, cold start "
            "and training seed)\n\n" + paired_text
            if paired_text
            else ""
        )
        + "\n## Physical HD95 (mm), explicit empty-mask rule\n\n"
        + markdown_table(rows, "physical")
        + "\n## The authors' convention (HD95 in voxels, empty prediction = 0 / 0)\n\n"
        + markdown_table(rows, "paper")
        + ("\n## Against Random\n\n" + versus if (versus := comparison_table(rows)) else "")
        + (
            "\n## What each strategy picked\n\n" + picked
            if (picked := diagnostics_table(rows))
            else ""
        )
        + ("\n## Spread across seeds\n\n" + spread if (spread := seed_spread_table(rows)) else "")
    )
    return ReportFiles(markdown, plot_dsc(rows, out_dir / PLOT_FILE))


def _replicate_design(results_dir: Path) -> bool:
    """Whether the run beside ``results_dir``'s bench.json used sub-pool replicates, so that equal
    seeds of different strategies are paired."""
    settings = results_dir / SETTINGS_FILE
    if not settings.is_file():
        return False
    try:
        return json.loads(settings.read_text()).get("subpool_cases") is not None
    except (OSError, ValueError):
        return False


def seed_spread_table(rows: list[dict[str, str]], rule: Rule = "physical") -> str:
    """For every strategy run with several seeds: the spread of its per-seed mean DSC by budget."""
    spread = [s for s in summarise_cells(rows, rule) if s.n_seeds > 1]
    if not spread:
        return ""
    lines = [
        "Mean test DSC (%) of each seed's run: lowest – highest, and the std over seeds.",
        "",
        "| strategy | budget | seeds | lowest – highest | std over seeds |",
        "|---|---|---|---|---|",
    ]
    for s in sorted(spread, key=lambda s: (s.strategy, _budget_order(s.budget))):
        lines.append(
            f"| {s.strategy} | {_budget_header(s.budget)} | {s.n_seeds} | "
            f"{100 * s.dice_seed_min:.2f} – {100 * s.dice_seed_max:.2f} | "
            f"{100 * s.dice_seed_std:.2f} |"
        )
    return "\n".join(lines) + "\n"


def _rule_columns(rule: str) -> tuple[str, str, str]:
    if rule not in _COLUMNS:
        raise InvalidInputError(f"unknown metric rule {rule!r}; expected 'physical' or 'paper'")
    return _COLUMNS[rule]


def _format_cell(summary: CellSummary) -> str:
    return (
        f"{100 * summary.dice_mean:.2f} ± {100 * summary.dice_std:.2f} / "
        f"{summary.hd95_mean:.2f} ± {summary.hd95_std:.2f}"
    )


def _budget_order(budget: str) -> tuple[int, float]:
    """Ratios first, ascending, then counts, ascending, then "all" (full supervision)."""
    if budget == "all":
        return 2, float("inf")
    try:
        return 1, float(int(budget))
    except ValueError:
        return 0, float(budget)


def _budget_header(budget: str) -> str:
    kind, value = _budget_order(budget)
    if kind == 2:
        return "all slices"
    return f"{int(value)} slices" if kind else f"{100 * value:g}%"


def dice_matrix(
    rows: list[dict[str, str]], strategy: str, budget: str, rule: Rule = "physical"
) -> tuple[list[str], list[str], np.ndarray]:
    """(seeds, case ids, DSC array seeds × cases) of one cell; cases sorted, seeds as listed."""
    dice_column, _, _ = _rule_columns(rule)
    cell = [r for r in rows if r["strategy"] == strategy and r["budget"] == budget]
    seeds = list(dict.fromkeys(r["seed"] for r in cell))
    cases = sorted({r["case_id"] for r in cell})
    values = np.full((len(seeds), len(cases)), np.nan)
    for r in cell:
        values[seeds.index(r["seed"]), cases.index(r["case_id"])] = float(r[dice_column])
    return seeds, cases, values


def bootstrap_difference(
    strategy: np.ndarray,
    reference: np.ndarray,
    n_boot: int = N_BOOTSTRAP,
    seed: int = BOOTSTRAP_SEED,
) -> tuple[float, float, float]:
    """Mean of ``strategy`` minus mean of ``reference`` (seeds × the same cases) and its bootstrap
    95 % interval, resampling cases (paired) and each side's seeds independently."""
    if strategy.shape[1] != reference.shape[1]:
        raise InvalidInputError("both strategies must be tested on the same cases")
    rng = np.random.default_rng(seed)
    n_cases = strategy.shape[1]
    replicates = np.empty(n_boot)
    for b in range(n_boot):
        cases = rng.integers(n_cases, size=n_cases)
        own = rng.integers(len(strategy), size=len(strategy))
        ref = rng.integers(len(reference), size=len(reference))
        replicates[b] = strategy[own][:, cases].mean() - reference[ref][:, cases].mean()
    low, high = np.percentile(replicates, [2.5, 97.5])
    return float(strategy.mean() - reference.mean()), float(low), float(high)


def bootstrap_mean(
    values: np.ndarray, n_boot: int = N_BOOTSTRAP, seed: int = BOOTSTRAP_SEED
) -> tuple[float, float]:
    """Bootstrap 95 % interval of the mean of seeds × cases, resampling both."""
    rng = np.random.default_rng(seed)
    n_seeds, n_cases = values.shape
    replicates = [
        values[rng.integers(n_seeds, size=n_seeds)][:, rng.integers(n_cases, size=n_cases)].mean()
        for _ in range(n_boot)
    ]
    low, high = np.percentile(replicates, [2.5, 97.5])
    return float(low), float(high)


def mean_intervals(
    rows: list[dict[str, str]], rule: Rule = "physical"
) -> dict[tuple[str, str], tuple[float, float]]:
    """Bootstrap 95 % interval of every (strategy, budget) mean DSC."""
    keys = dict.fromkeys((r["strategy"], r["budget"]) for r in rows)
    return {key: bootstrap_mean(dice_matrix(rows, *key, rule)[2]) for key in keys}


def comparison_table(rows: list[dict[str, str]], rule: Rule = "physical") -> str:
    """Per budget: each strategy's mean ± std over seeds and its difference from Random."""
    strategies = [s for s in dict.fromkeys(r["strategy"] for r in rows) if s != FULL_SUPERVISION]
    if REFERENCE_STRATEGY not in strategies:
        return ""
    budgets = sorted(
        {r["budget"] for r in rows if r["strategy"] != FULL_SUPERVISION}, key=_budget_order
    )
    lines = [
        f"DSC (%) per budget: mean ± std over seeds of the per-seed mean over test cases; the "
        f"difference from {REFERENCE_STRATEGY} in points with its bootstrap 95 % interval "
        f"({N_BOOTSTRAP} replicates resampling seeds and test cases).",
        "",
        "| budget | strategy | seeds | test cases | DSC mean ± std over seeds | "
        f"minus {REFERENCE_STRATEGY} [95 % interval] |",
        "|---|---|---|---|---|---|",
    ]
    for budget in budgets:
        _, ref_cases, reference = dice_matrix(rows, REFERENCE_STRATEGY, budget, rule)
        for strategy in strategies:
            seeds, cases, values = dice_matrix(rows, strategy, budget, rule)
            if not seeds:
                continue
            per_seed = 100 * values.mean(axis=1)
            spread = per_seed.std(ddof=1) if len(per_seed) > 1 else 0.0
            versus = "–"
            if strategy != REFERENCE_STRATEGY and reference.size and cases == ref_cases:
                diff, low, high = bootstrap_difference(values, reference)
                versus = f"{100 * diff:+.2f} [{100 * low:+.2f}, {100 * high:+.2f}]"
            lines.append(
                f"| {_budget_header(budget)} | {strategy} | {len(seeds)} | {len(cases)} | "
                f"{per_seed.mean():.2f} ± {spread:.2f} | {versus} |"
            )
    return "\n".join(lines) + "\n"


def diagnostics_table(rows: list[dict[str, str]]) -> str:
    """Per (strategy, budget): mean over seeds of the selection diagnostics of ``run_bench``."""
    if not rows or rows[0].get("picks_foreground", "") == "":
        return ""
    lines = [
        "Mean over seeds. Foreground shares use the pool labels after selection; tied = Û of "
        "exactly 0.5.",
        "",
        "| strategy | budget | seeds | picks with foreground | first pick with foreground | "
        "picks tied | pool tied | pool with foreground | cluster sizes (largest first, seed 1) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    cells: dict[tuple[str, str], dict[str, dict[str, str]]] = {}
    for r in rows:
        cells.setdefault((r["strategy"], r["budget"]), {}).setdefault(r["seed"], r)
    ordered = sorted(cells.items(), key=lambda kv: (_budget_order(kv[0][1]), kv[0][0]))
    for (strategy, budget), by_seed in ordered:
        first = next(iter(by_seed.values()))

        def mean(column: str, by_seed: dict = by_seed) -> str:
            # Rows of the multi-round run leave the cold-start-only columns empty.
            values = [float(r[column]) for r in by_seed.values() if r[column] != ""]
            return f"{100 * float(np.mean(values)):.0f}%" if values else "–"

        lines.append(
            f"| {strategy} | {_budget_header(budget)} | {len(by_seed)} | "
            f"{mean('picks_foreground')} | {mean('first_pick_foreground')} | "
            f"{mean('picks_tied')} | {mean('pool_tied')} | "
            f"{mean('pool_foreground')} | {first['cluster_sizes'] or '–'} |"
        )
    return "\n".join(lines) + "\n"
