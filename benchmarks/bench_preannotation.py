"""Pre-annotation quality before and after the first training run, on a benchmark's pool.

Reads a folder written by ``sugfw bench`` (``--out``): its pool (the configuration's slices of
the training cases, rebuilt from ``--data``), the SAM records in its cache, and the UNet
checkpoint of one cell (default: the first seed of ``gscu_content_aware`` at the first budget:
the model after the first annotations of the recommended queue). For every pool slice with
atrium that the cell did not pick (the slices an annotator would meet next), prints the Dice with
the label of:

- SAM's union (the cold-start pre-annotation drawn as one region);
- SAM's best single region (the regions are separate, so the others are deleted with a click);
- the UNet's mask (the pre-annotation after the first training run).

Usage:

    python benchmarks/bench_preannotation.py --out runs/bench-realistic \\
        --data ../shared/data/la2018 --config cpu_realistic
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from sugfw.cache import RecordCache
from sugfw.data import validate_slice
from sugfw.experiment.configs import CONFIGS
from sugfw.experiment.dataset import PreparedCase, find_case_files, load_case, prepare_case
from sugfw.experiment.runner import Cell, build_pool, plan_split
from sugfw.metrics import mask_dice
from sugfw.records import content_hash
from sugfw.segmentation.infer import predict_volume
from sugfw.segmentation.train import BEST_CHECKPOINT, load_trained_unet


def _interval(values: np.ndarray, seed: int = 0, n_boot: int = 2000) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    means = [values[rng.integers(len(values), size=len(values))].mean() for _ in range(n_boot)]
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="a sugfw bench results folder")
    parser.add_argument("--data", type=Path, required=True, help="the bench's --data")
    parser.add_argument("--config", default="cpu_realistic", choices=sorted(CONFIGS))
    parser.add_argument(
        "--cell", help="cell folder name (default gscu_content_aware_b<first>_s<first>)"
    )
    args = parser.parse_args()
    if not args.data.exists():
        print(f"skipped: {args.data} not found")
        return
    config = CONFIGS[args.config]
    cell = args.cell or Cell("gscu_content_aware", config.budgets[0], config.seeds[0]).folder_name
    cell_dir = args.out / "cells" / cell
    picks = set(json.loads((cell_dir / "picks.json").read_text()))
    files = {f.case_id: f for f in find_case_files(args.data)}
    split = plan_split(list(files.values()), config)
    cases: list[PreparedCase] = [
        prepare_case(load_case(files[c]), config.working_size, None, config.upper_percentile)
        for c in split.train
    ]
    pool = build_pool(cases, config.slice_step)
    scorer = config.scorer_spec().build(args.out / "cache")
    cache: RecordCache = scorer.cache
    model = load_trained_unet(cell_dir / "checkpoints" / BEST_CHECKPOINT)
    rows = []
    for image, label, slice_id in zip(pool.images, pool.labels, pool.slice_ids):
        truth = label > 0
        if slice_id in picks or not truth.any():
            continue
        record = cache.get(content_hash(validate_slice(image, slice_id)))
        if record is None:
            continue
        regions = record.regions()
        best = max((mask_dice(r, truth) for r in regions), default=0.0)
        unet = predict_volume(model, image[None])[0] > 0
        rows.append((mask_dice(record.union_mask, truth), best, mask_dice(unet, truth)))
    values = np.array(rows)
    print(
        f"cell {cell}: {len(picks)} annotated slices; "
        f"{len(values)} unpicked pool slices with atrium"
    )
    for name, column in zip(("SAM union", "SAM best region", "UNet after training"), values.T):
        low, high = _interval(column)
        print(
            f"{name:>20}: mean Dice {column.mean():.3f} (95 % CI {low:.3f}-{high:.3f}), "
            f"median {np.median(column):.3f}"
        )


if __name__ == "__main__":
    main()
