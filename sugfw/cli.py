"""``sugfw`` command line: score slices, select an annotation queue."""

from __future__ import annotations

import argparse
import csv
import logging
import sys
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from sugfw.errors import SugfwError

if TYPE_CHECKING:
    from sugfw.pipeline import ScorerSpec
    from sugfw.scorer_options import RayOptions

# Names of sugfw.experiment.CONFIGS, listed here so that --help does not import torch.
BENCH_CONFIG_NAMES = [
    "cpu",
    "cpu_realistic",
    "cpu_replicates",
    "cpu_large_pool",
    "paper",
    "paper_la2018",
    "paper_la2018_realistic",
]

log = logging.getLogger("sugfw")


def _budget(text: str) -> int | float:
    """argparse type: "35" is a count, "0.005" a ratio of the number of slices."""
    from sugfw.selection.budget import parse_budget

    try:  # the range is checked where the budget is used, with the command's own message
        return parse_budget(text, check=False)
    except SugfwError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def add_scoring_arguments(parser: argparse.ArgumentParser) -> None:
    """The scoring flags, from the declarations of ``sugfw.scorer_options``."""
    from sugfw.scorer_options import ScoringOptions
    from sugfw.settings import add_flags

    # The command line reads no SUGFW_* scoring variable (the backend does): flags only.
    group = parser.add_argument_group("model and scoring")
    add_flags(group, ScoringOptions, defaults=True, show_env=False)


def scorer_spec(args: argparse.Namespace) -> ScorerSpec:
    """The scorer the ``model and scoring`` arguments describe."""
    from sugfw.pipeline import ScorerSpec
    from sugfw.settings import from_args

    return ScorerSpec(**from_args(ScorerSpec, args))


def ray_options(args: argparse.Namespace) -> RayOptions:
    """The Ray settings: flags over the environment."""
    import dataclasses
    import os

    from sugfw.scorer_options import RayOptions, ray_options_from_env
    from sugfw.settings import from_args

    return dataclasses.replace(ray_options_from_env(os.environ), **from_args(RayOptions, args))


def _chosen_slices(args: argparse.Namespace):
    """Slices of the input, lazily, filtered by --slice-step and --limit."""
    from sugfw.data import iter_slices

    chosen = (s for s in iter_slices(args.input) if s.slice_index % args.slice_step == 0)
    return islice(chosen, args.limit) if args.limit else chosen


def cmd_score(args: argparse.Namespace) -> int:
    import time

    from sugfw.pipeline import index_from_scored, score_stream
    from sugfw.preview import save_preview

    if args.slice_step < 1:
        raise SugfwError(f"--slice-step {args.slice_step}: must be at least 1")
    args.out.mkdir(parents=True, exist_ok=True)
    spec, cache_dir = scorer_spec(args), args.cache_dir or args.out / "cache"
    ray = ray_options(args)
    started = time.perf_counter()
    scorer = None
    if ray.ray_address:
        from sugfw.distributed import score_on_ray

        log.info(
            "scoring with %s on the Ray cluster at %s (K=%d)", spec.model, ray.ray_address, spec.k
        )
        scored = list(
            score_on_ray(
                spec,
                _chosen_slices(args),
                cache_dir,
                ray.ray_address,
                actors=ray.ray_actors,
                progress=not args.quiet,
            )
        )
    else:
        scorer = spec.build(cache_dir)
        log.info("scoring with %s on %s (K=%d)", scorer.model.name, scorer.model.device, spec.k)
        scored = list(score_stream(scorer, _chosen_slices(args), progress=not args.quiet))
    if not scored:
        raise SugfwError(f"no slices to score in {args.input} (check --slice-step / --limit)")
    elapsed = time.perf_counter() - started
    index = index_from_scored(scored)
    index.save(args.out / "records.npz")
    u = index.uncertainty
    print(
        f"scored {len(scored)} slices in {elapsed:.1f} s ({elapsed / len(scored):.2f} s/slice) -> "
        f"{args.out / 'records.npz'}"
    )
    print(
        f"uncertainty: min {u.min():.4f}  p25 {np.percentile(u, 25):.4f}  median "
        f"{np.median(u):.4f}  "
        f"p75 {np.percentile(u, 75):.4f}  max {u.max():.4f}"
    )
    from sugfw.selection import tie_share

    # Slices at exactly 0.5 (every view agreed) tie in GSCU's Eq. 7 and give it no signal.
    print(f"tie share (uncertainty = 0.5): {100 * tie_share(u):.1f}% of {len(u)} slices")
    if args.save_preview:
        chosen = args.preview_slice or str(index.slice_ids[int(np.argmax(u))])
        item = next((s for s in _chosen_slices(args) if s.slice_id == chosen), None)
        if item is None:
            raise SugfwError(f"--preview-slice {chosen!r} is not among the scored slices")
        scorer = scorer or spec.build(cache_dir)  # the record comes from the cache
        save_preview(item.image, scorer.score_image(item.image, item.slice_id), args.save_preview)
        print(f"preview of {chosen} -> {args.save_preview}")
    return 0


def cmd_select(args: argparse.Namespace) -> int:
    from sugfw.records import RecordIndex
    from sugfw.selection import get_strategy, resolve_budget

    if not args.records.is_file():
        raise SugfwError(
            f"{args.records} not found: run `sugfw score` first (it writes records.npz)"
        )
    index = RecordIndex.load(args.records)
    budget = resolve_budget(args.budget, len(index.slice_ids))
    spec = get_strategy(args.strategy)
    selection = spec.run(index, budget, args.seed)
    ranks = selection.ranks()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["slice", "rank", "cluster", "uncertainty", "selected", "case_id", "slice_index"]
        )
        for i in selection.order:
            writer.writerow(
                [
                    index.slice_ids[i],
                    ranks[i],
                    selection.clusters[i],
                    f"{index.uncertainty[i]:.6f}",
                    int(ranks[i] < budget),
                    index.case_ids[i],
                    index.slice_indices[i],
                ]
            )
    print(f"{args.strategy}: {budget} of {len(ranks)} slices selected; full queue -> {args.out}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from sugfw.experiment import CONFIGS, run_bench, write_report

    config = CONFIGS[args.config].with_overrides(
        strategies=args.strategies,
        budgets=args.budgets,
        seeds=args.seeds,
        random_seeds=args.random_seeds,
        k=args.k,
        iterations=args.iterations,
        device=args.device,
        n_test=args.n_test,
        train_seed=args.train_seed,
    )
    if args.rounds is not None:
        from sugfw.experiment.rounds import run_rounds

        results = run_rounds(
            config,
            args.data,
            args.out,
            args.rounds,
            args.round_budget,
            args.round_strategy,
            cold_start=args.cold_start,
            progress=not args.quiet,
            test_data=args.test_data,
        )
        # Both arms of a seed share its cold start: paired by seed (round 0 differs by exactly 0).
        report = write_report(results, args.out / "rounds", paired=True)
    else:
        results = run_bench(
            config, args.data, args.out, progress=not args.quiet, test_data=args.test_data
        )
        report = write_report(results, args.out)
    print(f"results -> {results}\ntable -> {report.markdown}\nplot -> {report.plot}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from sugfw.active import ROUND_STRATEGIES
    from sugfw.scorer_options import RayOptions
    from sugfw.selection import STRATEGIES
    from sugfw.settings import add_flags

    parser = argparse.ArgumentParser(prog="sugfw", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    score = sub.add_parser(
        "score",
        help="score slices: uncertainty, PGDR features, union masks",
        description="Score every slice of a folder (PNG/JPEG/TIFF slices, NIfTI slices or "
        "volumes) and write records.npz; records are cached by content, so a rerun "
        "resumes where it stopped.",
    )
    score.add_argument("input", type=Path, help="a folder of slices/volumes, or one file")
    score.add_argument(
        "--out", type=Path, default=Path("runs/score"), help="output folder (default runs/score)"
    )
    score.add_argument("--cache-dir", type=Path, help="record cache (default OUT/cache)")
    score.add_argument(
        "--slice-step", type=int, default=1, help="score every n-th slice of each volume"
    )
    score.add_argument("--limit", type=int, help="score at most this many slices")
    score.add_argument(
        "--save-preview", type=Path, help="write a PNG of one slice, its U map and union mask"
    )
    score.add_argument(
        "--preview-slice", help="slice id for --save-preview (default: the most uncertain)"
    )
    score.add_argument("--quiet", action="store_true", help="no progress bar")
    add_flags(score, RayOptions)  # no defaults: the environment's apply when not given
    add_scoring_arguments(score)
    score.set_defaults(func=cmd_score)

    select = sub.add_parser(
        "select",
        help="order slices for annotation (GSCU or an ablation)",
        description="Read records.npz and write the annotation queue over ALL slices as CSV: "
        "the budget's picks first (selected=1), then the strategy's continuation.",
    )
    select.add_argument("records", type=Path, help="records.npz written by `sugfw score`")
    select.add_argument(
        "--budget", type=_budget, required=True, help="count (35) or ratio of all slices (0.005)"
    )
    select.add_argument(
        "--strategy", default="gscu", help=f"one of {', '.join(sorted(STRATEGIES))} (default gscu)"
    )
    select.add_argument(
        "--seed", type=int, default=2025, help="k-means seed (default 2025, the authors')"
    )
    select.add_argument("--out", type=Path, default=Path("runs/queue.csv"))
    select.set_defaults(func=cmd_select)

    bench = sub.add_parser(
        "bench",
        help="benchmark selection strategies (the paper's Table 1 / Fig. 2)",
        description="Score the training pool once, then for every strategy x budget x seed select "
        "slices, train the UNet, test it on the test cases (DSC, HD95) and append to "
        "OUT/results.csv; write OUT/report.md and OUT/dsc_vs_budget.png. Resumable: "
        "finished cells are skipped, stopped trainings resume from their checkpoints.",
    )
    bench.add_argument(
        "--config",
        choices=BENCH_CONFIG_NAMES,
        default="cpu",
        help="cpu: scaled-down run for a 2-core CPU (see sugfw/experiment/configs.py for its "
        "cost); "
        "cpu_realistic: every n-th slice, no label-based filtering, on a CPU; "
        "cpu_replicates: paired replicates (sub-pool and training seed per replicate) with the "
        "few-slice UNet recipe, on a CPU; cpu_large_pool: the same on ≈ 220 slices; "
        "paper / paper_la2018(_realistic): the paper's protocol for Promise12 / LA2018 (GPU)",
    )
    bench.add_argument(
        "--data",
        type=Path,
        required=True,
        help="MSD/nnU-Net folder (imagesTr/, labelsTr/, ...) or a folder of <case>.nii.gz + "
        "<case>_seg.nii.gz",
    )
    bench.add_argument(
        "--out", type=Path, required=True, help="results folder (reuse it to resume)"
    )
    bench.add_argument(
        "--test-data",
        type=Path,
        help="separate labelled folder to test every cell on (same layouts as --data); "
        "--data then gives only training and validation cases",
    )
    bench.add_argument("--n-test", type=int, help="test cases (default: the config's)")
    bench.add_argument(
        "--train-seed", type=int, help="UNet seed of every cell (default: the config's, 2025)"
    )
    bench.add_argument(
        "--strategies", nargs="+", help="selection strategies (default: the config's)"
    )
    bench.add_argument(
        "--budgets", nargs="+", type=_budget, help="counts (35) or ratios of the pool (0.05)"
    )
    bench.add_argument("--seeds", nargs="+", type=int, help="seeds of the deterministic strategies")
    bench.add_argument(
        "--random-seeds", nargs="+", type=int, help="seeds of the random strategy (paper: 5)"
    )
    bench.add_argument("--k", type=int, help="augmented everything-mode runs per slice")
    bench.add_argument("--iterations", type=int, help="UNet training iterations per cell")
    bench.add_argument("--device", help="auto, cpu, cuda, cuda:1 ...")
    bench.add_argument("--quiet", action="store_true", help="no progress bars")
    rounds = bench.add_argument_group(
        "multi-round run",
        "with --rounds: a cold start of the first budget by --cold-start, then R rounds of "
        "--round-budget slices by --round-strategy against random rounds, retraining each round, "
        "per seed of --seeds; rows in OUT/rounds.csv, report in OUT/rounds/",
    )
    rounds.add_argument("--rounds", type=int, help="rounds after the cold start")
    rounds.add_argument("--round-budget", type=int, default=4, help="slices per round (default 4)")
    rounds.add_argument(
        "--round-strategy",
        choices=[name for name in ROUND_STRATEGIES if name != "random"],
        default="entropy",
        help="how each round picks from the unlabelled pool (default entropy)",
    )
    rounds.add_argument(
        "--cold-start",
        default="gscu_content_aware",
        help="strategy of the cold start (default gscu_content_aware)",
    )
    bench.set_defaults(func=cmd_bench)

    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return args.func(args)
    except SugfwError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
