"""Scoring throughput: the local path vs a pool of Ray actors, on the same LA2018 slices, one run.

Three passes, each with a fresh record cache: the local path as ``sugfw score`` runs it (torch's
default thread count), the local path on one thread (what one CPU actor does), and a Ray pool of
``--actors`` one-thread CPU actors on a local cluster (loopback only) or on ``--ray ADDRESS``.
Prints slices per second for each, the pool's overhead against its actors' summed one-thread
rate, whether the records agree bit for bit, and an estimate (not a measurement) of what N actors
would give from the per-actor rate, with ``--actor-rate`` to put in a rate measured elsewhere
(e.g. one GPU actor's, from ``bench_scoring.py --device cuda``). Usage:

    python benchmarks/bench_ray.py --slices 4 --k 1
    python benchmarks/bench_ray.py --slices 64 --ray auto --actors 8 --actor-rate 2.5
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from sugfw.data import Slice, load_volume
from sugfw.pipeline import ScorerSpec, index_from_scored, score_stream
from sugfw.records import RecordIndex

DEFAULT_DATA = Path("/work/shared/data/la2018")
TARGET_SLICES = 100_000  # the size of job the estimate is sized for


def la2018_slices(data: Path, count: int) -> list[Slice]:
    """The middle slice of each of the first ``count`` training volumes (read, never copied)."""
    volumes = sorted((data / "imagesTr").glob("*.nii.gz"))[:count]
    slices = []
    for path in volumes:
        volume, spacing, _ = load_volume(path)
        z = volume.shape[-1] // 2
        case = path.name.removesuffix(".nii.gz")
        slices.append(Slice(f"{case}_z{z:03d}", volume[..., z], case, z, spacing, str(path)))
    return slices


def time_local(
    spec: ScorerSpec, slices: list[Slice], threads: int
) -> tuple[float, float, RecordIndex]:
    """(model load s, scoring s, index) of the local path on ``threads`` torch threads."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with tempfile.TemporaryDirectory() as cache:
            started = time.perf_counter()
            scorer = spec.build(Path(cache))
            loaded = time.perf_counter()
            index = index_from_scored(score_stream(scorer, slices, progress=False))
            return loaded - started, time.perf_counter() - loaded, index
    finally:
        torch.set_num_threads(previous)


def time_ray(
    spec: ScorerSpec, slices: list[Slice], address: str | None, actors: int
) -> tuple[float, float, float, RecordIndex]:
    """(cluster start s, actors ready s, scoring s, index) of a pool of one-thread actors."""
    if address is None:
        # Single-machine mode: every Ray server binds 127.0.0.1 (set before Ray is imported).
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    from sugfw.distributed import RayScoringPool, require_ray

    ray = require_ray()
    started = time.perf_counter()
    if address is None:
        ray.init(address="local", num_cpus=actors, include_dashboard=False, log_to_driver=False)
    else:
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    up = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory() as cache:
            with RayScoringPool(spec, Path(cache), actors=actors, threads=1) as pool:
                ready = time.perf_counter()
                index = index_from_scored(pool.score(slices))
                done = time.perf_counter()
    finally:
        ray.shutdown()
    return up - started, ready - up, done - ready, index


def same_records(a: RecordIndex, b: RecordIndex) -> bool:
    return all(
        np.array_equal(getattr(a, name), getattr(b, name))
        for name in ("content_hashes", "features_pgdr", "features_mean", "uncertainty")
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="LA2018 folder (imagesTr/)")
    parser.add_argument("--slices", type=int, default=4)
    parser.add_argument("--k", type=int, default=1)
    parser.add_argument(
        "--grid", type=int, nargs="+", default=None, help="box sides (model default)"
    )
    parser.add_argument("--actors", type=int, default=2)
    parser.add_argument("--ray", default=None, help="cluster address (default: a local one)")
    parser.add_argument(
        "--actor-rate",
        type=float,
        default=None,
        help="slices/s of one actor measured elsewhere (e.g. one GPU), used for the estimate",
    )
    args = parser.parse_args()

    if not (args.data / "imagesTr").is_dir():
        raise SystemExit(f"skipped: no LA2018 data at {args.data} (expected {args.data}/imagesTr)")
    slices = la2018_slices(args.data, args.slices)
    spec = ScorerSpec(k=args.k, grid=tuple(args.grid) if args.grid else None, device="cpu")
    load = os.getloadavg()[0]
    print(
        f"{len(slices)} LA2018 slices (middle of {len(slices)} volumes, "
        f"{slices[0].image.shape[0]}×{slices[0].image.shape[1]}), LiteMedSAM, K={args.k}, "
        f"grid {args.grid or 'default'}, CPU: {os.cpu_count()} cores, load average {load:.2f}"
    )

    threads = torch.get_num_threads()
    load_s, local_s, local_index = time_local(spec, slices, threads)
    local_rate = len(slices) / local_s
    print(
        f"local, {threads} threads      : {local_s:7.1f} s  {local_rate:.3f} slices/s  "
        f"(model load {load_s:.1f} s)"
    )
    _, one_s, one_index = time_local(spec, slices, 1)
    one_rate = len(slices) / one_s
    print(f"local, 1 thread       : {one_s:7.1f} s  {one_rate:.3f} slices/s  (= one CPU actor)")
    up_s, ready_s, ray_s, ray_index = time_ray(spec, slices, args.ray, args.actors)
    ray_rate = len(slices) / ray_s
    print(
        f"ray, {args.actors} actors × 1 thread: {ray_s:7.1f} s  {ray_rate:.3f} slices/s  "
        f"(cluster start {up_s:.1f} s, actors ready {ready_s:.1f} s)"
    )

    print(f"load average at the end {os.getloadavg()[0]:.2f} (above 0 = others share the cores)")
    efficiency = ray_rate / (args.actors * one_rate)
    print(
        f"ray vs local ({threads} threads): {ray_rate / local_rate:.2f}×; "
        f"vs {args.actors} × the one-thread rate: {efficiency:.0%} "
        f"(pool overhead {1 - efficiency:+.0%}, start-up not counted)"
    )
    print(
        f"records bit for bit, ray vs local 1 thread: {same_records(ray_index, one_index)}; "
        f"vs local {threads} threads: {same_records(ray_index, local_index)}"
    )

    per_actor = args.actor_rate or one_rate
    source = "given (--actor-rate)" if args.actor_rate else "one CPU thread, measured here"
    print(
        f"\nESTIMATE, not a measurement: N actors × {per_actor:.3f} slices/s ({source}) × "
        f"{min(efficiency, 1.0):.0%} pool efficiency; assumes the driver and the data path keep "
        "up and each actor has its own GPU (or cores)"
    )
    for n in (1, 2, 4, 8, 16, 32):
        rate = n * per_actor * min(efficiency, 1.0)
        hours = TARGET_SLICES / rate / 3600
        print(f"  N = {n:2d}: {rate:8.3f} slices/s   {TARGET_SLICES:,} slices in {hours:8.1f} h")


if __name__ == "__main__":
    main()
