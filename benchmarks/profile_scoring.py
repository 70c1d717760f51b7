"""Where one slice's scoring time goes: cProfile (Python functions) and torch's profiler (ops).

Scores one LA2018 mid-volume slice with the LiteMedSAM defaults after a warm-up slice (so export,
runtime compilation and lazy initialisation are not counted), once under cProfile and once under
``torch.profiler``, and prints the functions with the most cumulative time and the torch ops with
the most self time. ``--runtime torch`` profiles the reference path; the default is what ships.
The per-part split with FLOP counts is ``bench_speed.py``'s. Usage:

    python benchmarks/profile_scoring.py --k 2
    python benchmarks/profile_scoring.py --k 2 --runtime torch --top 25
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import time
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=Path("../shared/data/la2018"))
    parser.add_argument("--k", type=int, default=2)
    parser.add_argument("--runtime", default="auto", help="auto, torch, openvino or onnxruntime")
    parser.add_argument("--top", type=int, default=15, help="rows per table")
    args = parser.parse_args()

    from bench_scoring import load_bench_slices

    from sugfw.pipeline import ScorerSpec

    torch.set_grad_enabled(False)
    warm, image = load_bench_slices(args.data, 2)
    scorer = ScorerSpec(k=args.k, runtime=args.runtime).build()
    print(
        f"slice {image.shape}, K = {args.k}, runtime {scorer.model.runtime}, torch threads "
        f"{torch.get_num_threads()}, load average {os.getloadavg()[0]:.2f}"
    )
    scorer.score_detailed(warm)

    profiler = cProfile.Profile()
    start = time.perf_counter()
    profiler.runcall(scorer.score_detailed, image)
    print(f"\n== cProfile: {time.perf_counter() - start:.2f} s, by cumulative time ==")
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(args.top)
    print(text.getvalue().split("\n", 6)[-1].rstrip())  # the table, without pstats' preamble

    activities = [torch.profiler.ProfilerActivity.CPU]
    with torch.profiler.profile(activities=activities) as prof:
        start = time.perf_counter()
        scorer.score_detailed(image)
        seconds = time.perf_counter() - start
    print(f"\n== torch profiler: {seconds:.2f} s, torch ops by self CPU time ==")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.top))


if __name__ == "__main__":
    main()
