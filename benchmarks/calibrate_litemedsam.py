"""Calibrate LiteMedSAM's everything-mode thresholds on labelled LA2018 slices.

For every box of the grid on each slice, records the predicted IoU, the stability score, the
mask's area fraction and how much of the mask lies inside the labelled atrium; then, for a grid of
(predicted IoU, stability) thresholds, prints the union's image coverage, its Dice with the
atrium, and the number of masks kept, averaged over the slices. Usage:

    python benchmarks/calibrate_litemedsam.py --data ../shared/data/la2018 --cases 4 --slices 3
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from segment_anything.utils.amg import calculate_stability_score

from sugfw.data import load_volume
from sugfw.everything import STABILITY_OFFSET, logits_to_slice
from sugfw.intensity import scale_intensities
from sugfw.models import CanvasGeometry, build_model


def box_table(model, image: np.ndarray, grid: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    geo = CanvasGeometry.fit(*image.shape, model.canvas_size)
    scaled = torch.from_numpy(scale_intensities(image, (0.5, 99.5)))
    embedding = model.encode(model.prepare([scaled], [geo]))
    prompts = model.prompt_grid(geo, grid, "boxes")
    logits, iou = [], []
    for chunk in prompts.split(16):
        low, score = model.decode(embedding, chunk, False)
        logits.append(logits_to_slice(low[:, 0], geo))
        iou.append(score[:, 0])
    logits, iou = torch.cat(logits), torch.cat(iou)
    stability = calculate_stability_score(logits, 0.0, STABILITY_OFFSET)
    return np.stack([iou.numpy(), stability.numpy()], 1), (logits > 0).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=Path("../shared/data/la2018"))
    parser.add_argument("--cases", type=int, default=4)
    parser.add_argument(
        "--slices", type=int, default=3, help="slices per case, spread over the atrium's z-range"
    )
    parser.add_argument(
        "--grid", type=int, nargs="+", default=[64, 96, 128], help="box sides in canvas pixels"
    )
    parser.add_argument("--max-area", type=float, default=0.25)
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    model = build_model("litemedsam", device="cpu")
    samples = []
    for image_path in sorted((args.data / "imagesTr").glob("*.nii.gz"))[: args.cases]:
        volume, _, axis = load_volume(image_path)
        label = (
            np.moveaxis(
                np.asarray(nib.load(args.data / "labelsTr" / image_path.name).dataobj), axis, -1
            )
            > 0
        )
        zs = np.flatnonzero(label.any((0, 1)))
        for z in np.linspace(zs[0], zs[-1], args.slices + 2)[1:-1].round().astype(int):
            table, masks = box_table(model, volume[..., z], tuple(args.grid))
            samples.append((table, masks, label[..., z]))
            iou = table[:, 0]
            print(
                f"{image_path.name[:8]} z={z}: {len(table)} boxes, predicted IoU p50/p90/max "
                f"{np.percentile(iou, 50):.3f}/{np.percentile(iou, 90):.3f}/{iou.max():.3f}"
            )
    print(
        f"\n{'iou>':>6} {'stab>=':>7} {'kept':>6} {'cover':>6} {'dice':>6}  (means over "
        f"{len(samples)} slices)"
    )
    for t_iou, t_stab in itertools.product([0.7, 0.75, 0.8, 0.85, 0.9], [0.8, 0.85, 0.9]):
        kept, cover, dice = [], [], []
        for table, masks, truth in samples:
            keep = (table[:, 0] > t_iou) & (table[:, 1] >= t_stab)
            keep &= masks.reshape(len(masks), -1).mean(1) < args.max_area
            union = masks[keep].any(0) if keep.any() else np.zeros_like(truth)
            kept.append(keep.sum())
            cover.append(union.mean())
            dice.append(2 * (union & truth).sum() / max(union.sum() + truth.sum(), 1))
        print(
            f"{t_iou:6.2f} {t_stab:7.2f} {np.mean(kept):6.1f} {np.mean(cover):6.3f} "
            f"{np.mean(dice):6.3f}"
        )


if __name__ == "__main__":
    main()
