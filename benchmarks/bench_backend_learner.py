"""Pre-annotation Dice of the backend's UNet after its first annotations, on the main job's slices.

The main job (``bash scripts/run.sh``) imports every 11th slice of the first three volumes as
8-bit PNGs (``backend.labelstudio.import_volumes``). This script rebuilds those slices, takes the
first N of an annotation order as annotated (their label maps as the annotations), and trains
exactly as the backend's train job does (``TrainJob.train``: ``split_validation`` with the
backend's defaults, the configured recipe and window, warm start none), then reports the Dice of
the UNet's mask with the label on every remaining slice that holds atrium: the pre-annotations
the annotator meets next.

Orders: ``--orders random`` draws seeded permutations (``--seeds``); a file of slice ids, one a
line (e.g. the backend's saved queue), gives one fixed order. ``--policies`` compares the
validation policy (``new``: no case held out while it would outweigh the training slices;
``old``: a case held out from 3 annotated cases on, whatever it leaves).

Usage:

    python benchmarks/bench_backend_learner.py --data ../shared/data/la2018 --counts 4 8
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np

from backend.config import BackendConfig
from backend.jobs.splits import LabelledSlice, normalise_slice, split_validation
from backend.jobs.training_job import TrainJob
from backend.labelstudio.import_volumes import find_volumes, volume_slices
from sugfw.data import load_volume
from sugfw.metrics import dice
from sugfw.segmentation.infer import segment

MAIN_JOB_VOLUMES, MAIN_JOB_STEP = 3, 11


def main_job_slices(data: Path) -> list[LabelledSlice]:
    """The main job's slices with their labels, in import order."""
    slices = []
    for path in find_volumes([data])[:MAIN_JOB_VOLUMES]:
        label_path = path.parent.parent / "labelsTr" / path.name
        labels, _, _ = load_volume(label_path)
        case_id = path.name.split(".")[0]
        for index, pixels, spacing in volume_slices(path, slice_step=MAIN_JOB_STEP):
            slices.append(
                LabelledSlice(
                    len(slices) + 1,
                    normalise_slice(pixels),
                    (labels[..., index] > 0).astype(np.uint8),
                    case_id,
                    index,
                    spacing,
                    None,
                )
            )
    return slices


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="LA2018 (imagesTr/, labelsTr/)")
    parser.add_argument("--counts", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--orders", default="random", help="'random' or a file of slice ids")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--policies", nargs="+", default=["new"], choices=["new", "old"])
    parser.add_argument("--recipe", default="few_slice", choices=["few_slice", "paper"])
    parser.add_argument(
        "--epochs", type=int, help="SUGFW_TRAIN_EPOCHS for the run (default: the backend's)"
    )
    args = parser.parse_args()
    if not args.data.exists():
        print(f"skipped: {args.data} not found")
        return
    logging.basicConfig(level=logging.WARNING)
    slices = main_job_slices(args.data)
    ids = [f"{s.case_id}_z{s.slice_index:03d}" for s in slices]
    if args.orders == "random":
        orders = {
            f"random seed {seed}": np.random.default_rng(seed).permutation(len(slices))
            for seed in args.seeds
        }
    else:
        wanted = Path(args.orders).read_text().split()
        orders = {args.orders: np.array([ids.index(i) for i in wanted if i in ids])}
    print(f"{len(slices)} slices, {sum(bool(s.labels.any()) for s in slices)} with atrium")
    print(
        "| order | annotations | policy | trained on | validation | mean Dice | median | minutes |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, order in orders.items():
        for count in args.counts:
            annotated = [slices[i] for i in order[:count]]
            rest = [slices[i] for i in order[count:] if slices[i].labels.any()]
            for policy in args.policies:
                split = split_validation(annotated, 0.2, 0, keep_training_majority=policy == "new")
                with tempfile.TemporaryDirectory() as state:
                    config = BackendConfig(
                        state_dir=Path(state), device="cpu", train_recipe=args.recipe
                    ).replace(train_epochs=args.epochs)
                    job = TrainJob(config, predictions=None)  # type: ignore[arg-type]
                    started = time.perf_counter()
                    model, _ = job.train("1", 1, split, 2)
                    minutes = (time.perf_counter() - started) / 60
                scores = [
                    dice(segment(model, s.image[None], "cpu") > 0, s.labels[None] > 0) for s in rest
                ]
                print(
                    f"| {name} | {count} | {policy} | {len(split.train)} | "
                    f"{len(split.val)} | {np.mean(scores):.3f} | {np.median(scores):.3f} | "
                    f"{minutes:.1f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
