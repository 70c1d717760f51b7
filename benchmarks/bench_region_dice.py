"""Why pre-annotations come as separate regions: Dice with the atrium label of SAM's union vs its
best single region, on real LA2018 slices with the real LiteMedSAM weights.

For each of the first ``--slices`` LA2018 volumes, the mid-volume slice is windowed as scoring
windows view 0 (``sugfw.intensity.scale_intensities``) and run through everything mode with the
model's default settings (``everything_union``: view 0 is all a pre-annotation needs, so no
augmentations). Printed per slice and as the mean over slices:

- ``union``: Dice of the union (what a single merged region pre-draws);
- ``largest``: Dice of the largest region alone;
- ``best region``: Dice of the best of the record's regions (at most ``REGION_CAP``, largest
  first), i.e. what the annotator keeps after deleting the others, one click each;
- ``kept after deleting``: Dice of the OR of the regions at least half inside the label (an
  annotator deleting every mostly-wrong region).

Also the means over the slices with two or more kept masks, the only ones where separate regions
draw anything different from the union.

Skips (exit 0, said in the output) when the data is absent. Usage:

    python benchmarks/bench_region_dice.py --slices 3
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch

from sugfw.data import load_volume
from sugfw.everything import EverythingSettings, everything_union
from sugfw.intensity import scale_intensities
from sugfw.metrics import mask_dice
from sugfw.models import CanvasGeometry, build_model
from sugfw.records import REGION_CAP

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "la2018"


def mid_slices(data: Path, count: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, image, atrium label) of the mid-volume slice of the first ``count`` volumes."""
    found = []
    for path in sorted((data / "imagesTr").glob("*.nii.gz"))[:count]:
        label_path = data / "labelsTr" / path.name
        if not label_path.exists():
            continue
        volume, _, _ = load_volume(path)
        labels, _, _ = load_volume(label_path)
        middle = volume.shape[-1] // 2
        found.append((path.name.split(".")[0], volume[..., middle], labels[..., middle] > 0))
    return found


def dice_2d(mask: np.ndarray, label: np.ndarray) -> float:
    return mask_dice(mask, label, empty_value=0.0)


def region_figures(regions: np.ndarray, union: np.ndarray, label: np.ndarray) -> dict[str, float]:
    scores = [dice_2d(region, label) for region in regions]
    inside = [r for r in regions if r.any() and (r & label).sum() >= 0.5 * r.sum()]
    kept = np.any(inside, axis=0) if inside else np.zeros_like(label)
    return {
        "union": dice_2d(union, label),
        "largest": scores[0] if scores else 0.0,
        "best region": max(scores, default=0.0),
        "kept after deleting": dice_2d(kept, label),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--data", type=Path, default=Path(os.environ.get("SUGFW_LA2018", DEFAULT_DATA))
    )
    parser.add_argument("--slices", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--prompt-batch", type=int, default=128)
    args = parser.parse_args()

    slices = mid_slices(args.data, args.slices)
    if not slices:
        print(f"skipped: no LA2018 volumes with labels under {args.data} (set SUGFW_LA2018)")
        return
    model = build_model("litemedsam", device=args.device)
    settings = EverythingSettings.for_model(model)
    rows, counts = [], []
    for name, image, label in slices:
        start = time.perf_counter()
        scaled = torch.from_numpy(scale_intensities(image, (0.5, 99.5))).to(model.device)
        geometry = CanvasGeometry.fit(*image.shape, model.canvas_size)
        with torch.inference_mode():
            embedding = model.encode(model.prepare([scaled], [geometry]))
            result = everything_union(
                model, embedding, geometry, settings, args.prompt_batch, regions=REGION_CAP
            )
        union = result.union.cpu().numpy()
        regions = result.regions.cpu().numpy()
        figures = region_figures(regions, union, label)
        rows.append(figures)
        counts.append(result.kept)
        shown = "  ".join(f"{key} {value:.3f}" for key, value in figures.items())
        print(
            f"{name} {image.shape[0]}x{image.shape[1]}: {result.kept} kept, {len(regions)} "
            f"region(s), label {int(label.sum())} px: {shown} ({time.perf_counter() - start:.0f} s)"
        )
    print_means(f"mean over {len(rows)} slice(s) (LiteMedSAM defaults, cap {REGION_CAP})", rows)
    several = [row for row, count in zip(rows, counts) if count >= 2]
    if several:  # with one mask or none, separate regions and the union are the same drawing
        print_means(f"mean over the {len(several)} slice(s) with 2+ kept masks", several)


def print_means(title: str, rows: list[dict[str, float]]) -> None:
    means = {key: float(np.mean([row[key] for row in rows])) for key in rows[0]}
    print(f"{title}: " + "  ".join(f"{key} {value:.3f}" for key, value in means.items()))


if __name__ == "__main__":
    main()
