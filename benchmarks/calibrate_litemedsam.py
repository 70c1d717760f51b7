"""Calibrate LiteMedSAM's everything-mode thresholds on LA2018 slices, label-free first.

Slices: ``--slices`` per case spread evenly over the whole volume (``--spread volume``, the
label-free default: what a cold-start user has) or over the atrium's z-range (``--spread
atrium``, chosen with the labels). For every box of the grid on each slice, records the predicted
IoU, the stability score and the mask; then, for a grid of (predicted IoU, stability) thresholds,
prints the label-free criteria (masks kept, union coverage, share of slices whose union is not
empty) and, beside them, what the labels say (Dice of the union with the atrium, on the slices
that hold atrium). With ``--score-pairs``, each listed pair is also run through the real scorer
(K = ``--k`` augmented views) to give the label-free criteria of Û itself: the share of slices at
exactly Û = 0.5 (no disagreement between views: GSCU's ties) and the spread (std) of Û. Usage:

    python benchmarks/calibrate_litemedsam.py --data ../shared/data/la2018 --cases 4 --slices 6 \
        --score-pairs 0.85,0.85 0.85,0.80 0.80,0.80
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
from sugfw.pipeline import ScorerSpec
from sugfw.selection import tie_share


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
    parser.add_argument("--spread", choices=["volume", "atrium"], default="volume")
    parser.add_argument(
        "--score-pairs",
        nargs="*",
        default=[],
        help="IOU,STABILITY pairs to score with the real scorer for Û's ties and spread",
    )
    parser.add_argument("--k", type=int, default=2, help="augmented views with --score-pairs")
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
        zs = (
            np.flatnonzero(label.any((0, 1)))
            if args.spread == "atrium"
            else np.arange(volume.shape[-1])
        )
        for z in np.linspace(zs[0], zs[-1], args.slices + 2)[1:-1].round().astype(int):
            table, masks = box_table(model, volume[..., z], tuple(args.grid))
            samples.append((table, masks, label[..., z], volume[..., z]))
            iou = table[:, 0]
            print(
                f"{image_path.name[:8]} z={z}: {len(table)} boxes, predicted IoU p50/p90/max "
                f"{np.percentile(iou, 50):.3f}/{np.percentile(iou, 90):.3f}/{iou.max():.3f}"
            )
    with_atrium = sum(bool(truth.any()) for _, _, truth, _ in samples)
    print(
        f"\n| pred. IoU > | stability ≥ | masks kept | coverage | non-empty union | "
        f"Dice with atrium ({with_atrium} slices) |  (means over {len(samples)} slices)"
    )
    print("|---|---|---|---|---|---|")
    for t_iou, t_stab in itertools.product([0.7, 0.75, 0.8, 0.85, 0.9], [0.8, 0.85, 0.9]):
        kept, cover, dice = [], [], []
        for table, masks, truth, _ in samples:
            keep = (table[:, 0] > t_iou) & (table[:, 1] >= t_stab)
            keep &= masks.reshape(len(masks), -1).mean(1) < args.max_area
            union = masks[keep].any(0) if keep.any() else np.zeros_like(truth)
            kept.append(keep.sum())
            cover.append(union.mean())
            if truth.any():
                dice.append(2 * (union & truth).sum() / (union.sum() + truth.sum()))
        print(
            f"| {t_iou:.2f} | {t_stab:.2f} | {np.mean(kept):.1f} | {np.mean(cover):.3f} | "
            f"{np.mean(np.array(kept) > 0):.2f} | {np.mean(dice):.3f} |"
        )
    if args.score_pairs:
        score_pairs(args, [image for _, _, _, image in samples])


def score_pairs(args: argparse.Namespace, images: list[np.ndarray]) -> None:
    """Û's label-free criteria for each threshold pair, through the real scorer (K views)."""
    print(f"\n| pred. IoU > | stability ≥ | share at Û = 0.5 | std of Û | (K = {args.k}) |")
    print("|---|---|---|---|---|")
    for pair in args.score_pairs:
        t_iou, t_stab = (float(v) for v in pair.split(","))
        scorer = ScorerSpec(
            device="cpu",
            k=args.k,
            grid=tuple(args.grid),
            pred_iou_thresh=t_iou,
            stability_thresh=t_stab,
            max_area_fraction=args.max_area,
        ).build()
        u = np.array([scorer.score_image(image).uncertainty for image in images])
        print(f"| {t_iou:.2f} | {t_stab:.2f} | {tie_share(u):.2f} | {u.std():.4f} | |")


if __name__ == "__main__":
    main()
