"""What a prediction's ``cluster`` would do to the label stream: Label Studio's rule against the
published score order, on synthetic projects.

Label Studio 1.23's uncertainty sampling (``projects/functions/next_task.py``) serves, to one
annotator, the task of the cluster they have labelled least, then the lowest score. This replays
that rule over each cold-start strategy's queue
(``backend.jobs.cold_start_ranking.plan_queue``) with GSCU's
clusters attached, and reports where the served order first leaves the score order. Where it
never does, ``cluster`` adds nothing; where it does, it breaks the queue the backend published.
A re-ranked round order (entropy, ...) does not rotate GSCU's clusters at all.

Usage:
    python benchmarks/bench_cluster_rule.py [--seed 0]
"""

from __future__ import annotations

import argparse
from collections import Counter

import numpy as np

from backend.config import COLD_START_STRATEGIES
from backend.jobs.cold_start_ranking import plan_queue
from sugfw.records import SliceRecord


def served_with_clusters(scores: np.ndarray, clusters: np.ndarray) -> list[int]:
    """Label Studio's order for one annotator: least-labelled cluster first, then score."""
    left, solved, served = set(range(len(scores))), Counter(), []
    while left:
        task = min(left, key=lambda i: (solved[clusters[i]], scores[i]))
        served.append(task)
        left.remove(task)
        solved[clusters[task]] += 1
    return served


def synthetic_project(n: int, groups: int, rng: np.random.Generator) -> list[SliceRecord]:
    """``n`` records in ``groups`` uneven Gaussian blobs of 256 dimensions."""
    centres = rng.standard_normal((groups, 256)) * 3
    sizes = rng.multinomial(n, rng.dirichlet(np.ones(groups)))
    features = np.concatenate(
        [c + rng.standard_normal((size, 256)) for c, size in zip(centres, sizes)]
    ).astype(np.float32)
    return [
        SliceRecord(
            f"s{i}",
            f"h{i}",
            row,
            row.copy(),
            float(rng.uniform(0.5, 0.75)),
            None,
            None,
            1,
            content=float(rng.uniform()),
        )
        for i, row in enumerate(features)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    for n, budget in [(60, 6), (200, 10), (500, 0.01), (1000, 0.01)]:
        records = synthetic_project(n, 8, rng)
        for strategy in COLD_START_STRATEGIES:
            selection = plan_queue(records, budget, args.seed, strategy)
            ranks = np.asarray(selection.ranks())
            published = list(np.argsort(ranks))
            served = served_with_clusters(ranks, np.asarray(selection.clusters))
            first = next((i for i, (a, b) in enumerate(zip(published, served)) if a != b), None)
            agree = sum(a == b for a, b in zip(published, served))
            where = "never" if first is None else f"at position {first}"
            print(
                f"N={n:5d} budget={budget!s:5} {strategy:19s} {selection.n_selected:3d} clusters: "
                f"leaves the score order {where}; {agree}/{n} positions agree"
            )


if __name__ == "__main__":
    main()
