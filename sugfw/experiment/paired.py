"""Paired comparison of selection strategies over replicates (the ``cpu_replicates`` design).

A replicate r is (sub-pool drawn with seed r, training seed r), shared by every arm, so two arms
are compared within each replicate and the replicates are the independent units:

- d_r = mean over test cases of (DSC_arm − DSC_reference) in replicate r; the estimate is the
  mean of d_r, with a Student-t 95 % interval over replicates (mean ± t₀.₉₇₅,ₙ₋₁ · s / √n) and a
  two-level bootstrap interval that resamples replicates and, independently, test cases (the
  same cases on both sides, so the comparison stays paired by case).
- A run *collapses* when its mean test DSC is below ``COLLAPSE_DSC``; the collapse rates of two
  arms are compared with the exact McNemar test on the replicates where exactly one collapsed
  (two-sided binomial test of the discordant counts at p = 1/2).
- Identical training sets are counted once: within an arm and budget, a replicate whose
  ``picks_key`` (training seed and slice ids) repeats an earlier replicate's is dropped before
  pairing, so a duplicated model never counts as independent evidence.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from sugfw.errors import InvalidInputError

COLLAPSE_DSC = 0.10
N_BOOTSTRAP = 2000
BOOTSTRAP_SEED = 0


@dataclass(frozen=True)
class PairedDifference:
    """One arm against the reference at one budget; DSC differences as fractions."""

    arm: str
    reference: str
    budget: str
    n_replicates: int
    mean: float
    t_low: float
    t_high: float
    boot_low: float
    boot_high: float
    collapsed_arm: int
    collapsed_reference: int
    mcnemar_p: float


def t_interval(values: Sequence[float] | np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Student-t interval of the mean of ``values``; (nan, nan) for fewer than two values."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) < 2:
        return float("nan"), float("nan")
    half = stats.t.ppf(0.5 + level / 2, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
    return float(values.mean() - half), float(values.mean() + half)


def mcnemar_exact(arm_collapsed: np.ndarray, reference_collapsed: np.ndarray) -> float:
    """Two-sided exact McNemar p-value for paired binary outcomes (1.0 with no discordant pair)."""
    arm_collapsed = np.asarray(arm_collapsed, dtype=bool)
    reference_collapsed = np.asarray(reference_collapsed, dtype=bool)
    only_arm = int((arm_collapsed & ~reference_collapsed).sum())
    only_reference = int((reference_collapsed & ~arm_collapsed).sum())
    if only_arm + only_reference == 0:
        return 1.0
    return float(stats.binomtest(only_arm, only_arm + only_reference, 0.5).pvalue)


def bootstrap_paired(
    arm: np.ndarray,
    reference: np.ndarray,
    n_boot: int = N_BOOTSTRAP,
    seed: int = BOOTSTRAP_SEED,
) -> tuple[float, float]:
    """95 % percentile interval of mean(arm − reference) over replicates × cases, resampling
    replicates and cases independently (the same draws for both arms)."""
    if arm.shape != reference.shape or arm.ndim != 2:
        raise InvalidInputError(
            f"paired bootstrap needs two replicates × cases arrays of one shape, got {arm.shape} "
            f"and {reference.shape}"
        )
    difference = arm - reference
    rng = np.random.default_rng(seed)
    n_rep, n_cases = difference.shape
    means = np.array(
        [
            difference[rng.integers(n_rep, size=n_rep)][
                :, rng.integers(n_cases, size=n_cases)
            ].mean()
            for _ in range(n_boot)
        ]
    )
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def replicate_matrix(
    rows: Sequence[Mapping[str, str]], arm: str, budget: str, column: str = "dice"
) -> dict[str, dict[str, float]]:
    """replicate (seed) → {case id → value} of one arm and budget, identical training sets once
    (the first replicate in row order keeps a repeated ``picks_key``)."""
    by_replicate: dict[str, dict[str, float]] = {}
    seen_keys: dict[str, str] = {}
    for row in rows:
        if row["strategy"] != arm or row["budget"] != budget:
            continue
        key = row.get("picks_key") or ""
        owner = seen_keys.setdefault(key, row["seed"]) if key else row["seed"]
        if owner != row["seed"]:
            continue  # the same training set as an earlier replicate: counted once
        by_replicate.setdefault(row["seed"], {})[row["case_id"]] = float(row[column])
    return by_replicate


def paired_difference(
    rows: Sequence[Mapping[str, str]], arm: str, reference: str, budget: str
) -> PairedDifference | None:
    """``arm`` against ``reference`` at ``budget`` over their common replicates and cases; None
    when they share no replicate."""
    own = replicate_matrix(rows, arm, budget)
    ref = replicate_matrix(rows, reference, budget)
    replicates = [r for r in own if r in ref]
    if not replicates:
        return None
    cases = sorted(set.intersection(*(set(own[r]) & set(ref[r]) for r in replicates)))
    if not cases:
        return None
    a = np.array([[own[r][c] for c in cases] for r in replicates])
    b = np.array([[ref[r][c] for c in cases] for r in replicates])
    per_replicate = (a - b).mean(axis=1)
    t_low, t_high = t_interval(per_replicate)
    boot_low, boot_high = bootstrap_paired(a, b)
    a_collapsed, b_collapsed = a.mean(axis=1) < COLLAPSE_DSC, b.mean(axis=1) < COLLAPSE_DSC
    return PairedDifference(
        arm,
        reference,
        budget,
        len(replicates),
        float(per_replicate.mean()),
        t_low,
        t_high,
        boot_low,
        boot_high,
        int(a_collapsed.sum()),
        int(b_collapsed.sum()),
        mcnemar_exact(a_collapsed, b_collapsed),
    )


def paired_table(rows: Sequence[Mapping[str, str]], reference: str = "random") -> str:
    """Markdown: per budget, each arm's paired DSC difference from ``reference`` with both
    intervals, and both collapse counts with McNemar's exact p; "" without the reference."""
    arms = [s for s in dict.fromkeys(r["strategy"] for r in rows) if s != reference]
    budgets = list(dict.fromkeys(r["budget"] for r in rows if r["strategy"] == reference))
    lines = [
        f"| budget | arm | replicates | DSC − {reference} (points) | 95 % t-interval | "
        f"95 % bootstrap | collapsed (arm / {reference}) | McNemar p |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for budget in budgets:
        for arm in arms:
            result = paired_difference(rows, arm, reference, budget)
            if result is None:
                continue
            lines.append(
                f"| {budget} | {arm} | {result.n_replicates} | {100 * result.mean:+.2f} | "
                f"[{100 * result.t_low:+.2f}, {100 * result.t_high:+.2f}] | "
                f"[{100 * result.boot_low:+.2f}, {100 * result.boot_high:+.2f}] | "
                f"{result.collapsed_arm} / {result.collapsed_reference} | "
                f"{result.mcnemar_p:.3f} |"
            )
    return "\n".join(lines) + "\n" if len(lines) > 2 else ""
