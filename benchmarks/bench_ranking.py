"""GSCU ranking at project scale: the backend's queue planning on N records of 256 dimensions.

Times ``backend.jobs.cold_start_ranking.plan_queue``'s GSCU (k-means with C = 1 % of N, then the
full queue
by Eq. 7) on synthetic records, and checks how close the large-pool path (mini-batch k-means)
comes to the exact one (10 full k-means restarts) on a pool where both can run:

- mean squared distance to the assigned centroid (k-means' objective), mini-batch / exact;
- for the first C picks (the selection): the mean distance, in feature space, from each exact
  pick to the nearest mini-batch pick, against the same from exact picks to random pool slices;
- with ``--records records.npz`` (e.g. a ``sugfw bench`` pool), the same on real features.

Usage:
    python benchmarks/bench_ranking.py                 # N = 100,000 timed, N = 10,000 compared
    python benchmarks/bench_ranking.py --n 20000 --compare-n 5000 --records runs/x/records.npz
"""

from __future__ import annotations

import argparse
import importlib
import time
from pathlib import Path

import numpy as np

from sugfw.selection import clustering, get_strategy


def synthetic_records(n: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Features from a mixture of Gaussians (slices of many cases and levels), uncertainties
    with a third exactly at 0.5 (empty unions), as LiteMedSAM gives on MRI."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(max(n // 50, 10), dim)).astype(np.float32)
    features = centres[rng.integers(len(centres), size=n)]
    features += 0.5 * rng.normal(size=(n, dim)).astype(np.float32)
    uncertainty = 0.5 + rng.uniform(0, 0.03, n)
    uncertainty[rng.random(n) < 0.33] = 0.5
    return features, uncertainty


def time_gscu(features: np.ndarray, uncertainty: np.ndarray, budget: int) -> tuple[float, float]:
    """(seconds in k-means, seconds for the whole GSCU queue), from one run."""
    spent = [0.0]
    cluster = clustering.cluster_features

    def timed(*args, **kwargs):
        began = time.perf_counter()
        try:
            return cluster(*args, **kwargs)
        finally:
            spent[0] += time.perf_counter() - began

    gscu_module = importlib.import_module("sugfw.selection.gscu")
    gscu_module.cluster_features = timed
    try:
        started = time.perf_counter()
        selection = get_strategy("gscu").select(features, uncertainty, budget, 0)
        total_s = time.perf_counter() - started
    finally:
        gscu_module.cluster_features = cluster
    assert len(selection.order) == len(features)
    return spent[0], total_s


def inertia(features: np.ndarray, labels: np.ndarray) -> float:
    total = 0.0
    for c in np.unique(labels):
        members = features[labels == c]
        total += float(((members - members.mean(axis=0)) ** 2).sum())
    return total / len(features)


def picks_with(features, uncertainty, budget, mini_batch: bool) -> tuple[np.ndarray, float]:
    saved = clustering.MINI_BATCH_WORK
    clustering.MINI_BATCH_WORK = 0.0 if mini_batch else float("inf")
    try:
        selection = get_strategy("gscu").select(features, uncertainty, budget, 0)
        labels = clustering.cluster_features(features, budget, 0)
    finally:
        clustering.MINI_BATCH_WORK = saved
    return selection.order[:budget], inertia(features, labels)


def compare(features: np.ndarray, uncertainty: np.ndarray, budget: int, label: str) -> None:
    exact, exact_inertia = picks_with(features, uncertainty, budget, mini_batch=False)
    mini, mini_inertia = picks_with(features, uncertainty, budget, mini_batch=True)
    rng = np.random.default_rng(0)
    randoms = rng.choice(len(features), size=budget, replace=False)

    def mean_nearest(a: np.ndarray, b: np.ndarray) -> float:
        d = ((features[a][:, None, :] - features[b][None, :, :]) ** 2).sum(-1)
        return float(np.sqrt(d.min(axis=1)).mean())

    print(f"{label}: N = {len(features)}, C = {budget}")
    print(f"  k-means objective, mini-batch / exact: {mini_inertia / exact_inertia:.4f}")
    print(f"  picks identical: {len(set(exact) & set(mini))} of {budget}")
    print(
        f"  exact pick -> nearest mini-batch pick: {mean_nearest(exact, mini):.3f}; "
        f"-> nearest random slice: {mean_nearest(exact, randoms):.3f} (feature distance)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=100_000, help="records to rank (timed)")
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--ratio", type=float, default=0.01, help="C = ratio × N")
    parser.add_argument(
        "--compare-n", type=int, default=10_000, help="pool for exact vs mini-batch"
    )
    parser.add_argument("--records", type=Path, help="records.npz to compare on real features")
    args = parser.parse_args()

    features, uncertainty = synthetic_records(args.n, args.dim, 0)
    budget = max(1, round(args.ratio * args.n))
    path = "mini-batch" if args.n * budget * args.dim > clustering.MINI_BATCH_WORK else "exact"
    kmeans_s, total_s = time_gscu(features, uncertainty, budget)
    print(
        f"GSCU at N = {args.n}, D = {args.dim}, C = {budget} ({path} k-means): "
        f"{total_s:.1f} s in all ({kmeans_s:.1f} s k-means, {total_s - kmeans_s:.1f} s the rest)"
    )

    small, small_u = synthetic_records(args.compare_n, args.dim, 1)
    compare(small, small_u, max(2, round(args.ratio * args.compare_n)), "synthetic")
    if args.records is not None:
        from sugfw.records import RecordIndex

        index = RecordIndex.load(args.records)
        n = len(index.slice_ids)
        compare(index.features_pgdr, index.uncertainty, max(2, round(0.1 * n)), f"{args.records}")


if __name__ == "__main__":
    main()
