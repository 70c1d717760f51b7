"""The learner's gate: does the UNet learn from a handful of slices, and does it do so reliably?

Before any selection strategy is compared, the network trained on the picks must (a) reach a
useful ceiling and (b) give the same outcome (collapse or not) whatever its training seed. This
script trains, on the benchmark configuration's data (no SAM scoring needed):

- ``full``: every slice of replicate r's sub-pool (full supervision of that project);
- ``few``: ``--few`` slices drawn at random from the same sub-pool among draws holding at least
  two atrium slices (a pick set any strategy could make);

each with training seeds ``--train-seeds``, for each recipe in ``--recipes`` (``paper``: the
``cpu_realistic`` recipe, SGD + BatchNorm + rot90/flip on 128-px crops of 256-px slices at its
own working size; ``few_slice``: ``TrainConfig.few_slice`` at the configuration's working size),
and tests every model on the configuration's test cases (3-D DSC and HD95 per case). A run
"collapses" when its mean test DSC is below 10 %.

Rows go to ``OUT/learner.csv`` (one per run and test case; finished runs are skipped on a
rerun, so the script is resumable) and a summary is printed: mean DSC with a t-interval over
seeds, HD95, collapse count, minutes per run (wall time of the invocation that finished the run:
a run resumed from its checkpoints counts only what was left).

Usage:

    python benchmarks/bench_learner.py --data ../shared/data/la2018 --out runs/learner
"""

from __future__ import annotations

import argparse
import csv
import logging
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from sugfw.experiment.configs import CONFIGS, BenchConfig
from sugfw.experiment.dataset import find_case_files, load_case, prepare_case
from sugfw.experiment.paired import COLLAPSE_DSC, t_interval
from sugfw.experiment.runner import (
    build_pool,
    case_result_rows,
    plan_split,
    subpool,
    train_on_picks,
)

COLUMNS = (
    "recipe",
    "picks",
    "replicate",
    "train_seed",
    "n_train",
    "minutes",
    "case_id",
    "dice",
    "hd95_mm",
    "pred_empty",
    "best_val_dice",
)


def with_recipe(base: BenchConfig, recipe: str) -> BenchConfig:
    """``base`` with the named training recipe (``paper``: cpu_realistic's training)."""
    if recipe == "few_slice":
        return replace(base, recipe="few_slice")
    old = CONFIGS["cpu_realistic"]
    return replace(
        base,
        recipe="paper",
        working_size=old.working_size,
        iterations=old.iterations,
        crop_size=old.crop_size,
        eval_every=old.eval_every,
        batch_size=old.batch_size,
    )


def few_picks(labels: list[np.ndarray], positions: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` positions drawn with ``seed`` among ``positions``, redrawn until two hold atrium."""
    rng = np.random.default_rng(seed)
    while True:
        picks = np.sort(rng.choice(positions, size=n, replace=False))
        if sum(bool(labels[i].any()) for i in picks) >= 2:
            return picks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="labelled volumes (LA2018)")
    parser.add_argument("--out", type=Path, required=True, help="results folder (resumable)")
    parser.add_argument("--config", default="cpu_replicates", choices=sorted(CONFIGS))
    parser.add_argument("--recipes", nargs="+", default=["few_slice", "paper"])
    parser.add_argument("--picks", nargs="+", default=["full", "few"], choices=["full", "few"])
    parser.add_argument("--few", type=int, default=4, help="slices of the 'few' pick set")
    parser.add_argument("--replicate", type=int, default=0, help="sub-pool seed")
    parser.add_argument("--train-seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--iterations", type=int, help="override the recipe's iterations")
    parser.add_argument("--n-test", type=int, help="override the config's test cases")
    args = parser.parse_args()
    if not args.data.exists():
        print(f"skipped: {args.data} not found")
        return
    logging.basicConfig(level=logging.WARNING)
    args.out.mkdir(parents=True, exist_ok=True)
    results = args.out / "learner.csv"
    done = set()
    if results.exists():
        with results.open(newline="") as handle:
            done = {
                (r["recipe"], r["picks"], r["replicate"], r["train_seed"])
                for r in csv.DictReader(handle)
            }
    else:
        with results.open("w", newline="") as handle:
            csv.DictWriter(handle, COLUMNS).writeheader()

    base = CONFIGS[args.config].with_overrides(n_test=args.n_test, iterations=args.iterations)
    files = {f.case_id: f for f in find_case_files(args.data)}
    split = plan_split(list(files.values()), base)
    for recipe in args.recipes:
        config = with_recipe(base, recipe)
        if args.iterations:
            config = replace(config, iterations=args.iterations)

        def prepare(case_id: str, config: BenchConfig = config):
            return prepare_case(
                load_case(files[case_id]), config.working_size, config.foreground_margin
            )

        train_cases = [prepare(c) for c in split.train]
        pool = build_pool(train_cases, config.slice_step)
        val = [(c.images, c.labels) for c in map(prepare, split.val)]
        tests = [prepare(c) for c in split.test]
        positions = subpool(pool.case_ids, config.subpool_cases, args.replicate)
        for picks_name in args.picks:
            chosen = (
                positions
                if picks_name == "full"
                else few_picks(pool.labels, positions, args.few, args.replicate)
            )
            for seed in args.train_seeds:
                key = (recipe, picks_name, str(args.replicate), str(seed))
                if key in done:
                    continue
                train_config = config.train_config(len(chosen), seed, "cpu")
                started = time.perf_counter()
                run_dir = args.out / "_".join(key)
                model, result = train_on_picks(
                    [int(i) for i in chosen], train_config, pool, val, run_dir, progress=False
                )
                rows = case_result_rows(model, result, train_config, tests, config.batch_size)
                minutes = (time.perf_counter() - started) / 60
                with results.open("a", newline="") as handle:
                    writer = csv.DictWriter(handle, COLUMNS, extrasaction="ignore")
                    writer.writerows(
                        {
                            **row,
                            "recipe": recipe,
                            "picks": picks_name,
                            "replicate": args.replicate,
                            "train_seed": seed,
                            "n_train": len(chosen),
                            "minutes": round(minutes, 2),
                        }
                        for row in rows
                    )
                mean = np.mean([float(r["dice"]) for r in rows])
                print(
                    f"{'/'.join(key)}: n={len(chosen)} DSC {100 * mean:.1f} % ({minutes:.1f} min)",
                    flush=True,
                )
    summarise(results)


def summarise(results: Path) -> None:
    """Per (recipe, picks): mean DSC over runs with a t-interval, HD95, collapses, minutes."""
    with results.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    runs: dict[tuple[str, str], dict[str, list[dict[str, str]]]] = {}
    for row in rows:
        arm = runs.setdefault((row["recipe"], row["picks"]), {})
        arm.setdefault(f"{row['replicate']}/{row['train_seed']}", []).append(row)
    print("| recipe | picks | runs | DSC % (95 % t-interval) | HD95 mm | collapsed | min/run |")
    print("|---|---|---|---|---|---|---|")
    for (recipe, picks), by_run in sorted(runs.items()):
        dsc = np.array([np.mean([float(r["dice"]) for r in v]) for v in by_run.values()])
        hd95 = np.nanmean([float(r["hd95_mm"]) for v in by_run.values() for r in v])
        minutes = np.mean([float(v[0]["minutes"]) for v in by_run.values()])
        low, high = t_interval(dsc)
        print(
            f"| {recipe} | {picks} (n={by_run[next(iter(by_run))][0]['n_train']}) | {len(dsc)} "
            f"| {100 * dsc.mean():.1f} ({100 * low:.1f}, {100 * high:.1f}) | {hd95:.1f} "
            f"| {int((dsc < COLLAPSE_DSC).sum())} | {minutes:.1f} |"
        )


if __name__ == "__main__":
    main()
