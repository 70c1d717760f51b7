"""Scoring throughput and peak memory: the authors' procedure vs this project's path.

Three paths, each in its own child process (so peak memory is its own), on the same slices:

- ``authors``: SAM's stock ``SamAutomaticMaskGenerator`` run once per image (the slice and each of
  its K augmented copies), sequentially, then the same area filter, union, registration and pooling.
- ``project``: ``sugfw.scoring.Scorer`` on the same SAM model, weights and settings
  (``project_bf16``: the same under bf16 autocast).
- ``litemedsam``: the project's path with the default model and its default settings.

SAM weights are random (seeded), so the thresholds are set to keep every mask (predicted IoU and
stability 0, box NMS off), which makes the two SAM paths' union masks comparable; timing does not
depend on weight values. Prints slices per second, peak memory, the speed-up and the mean IoU of
the union masks between the two SAM paths. Usage:

    python benchmarks/bench_scoring.py --points 16 --k 2 --slices 2
    python benchmarks/bench_scoring.py --points 32 --k 10 --slices 8 --device cuda   # paper
    settings
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from sugfw.everything import EverythingSettings
from sugfw.metrics import mask_iou
from sugfw.models import build_model
from sugfw.scoring import Scorer, ScoringSettings, build_views, finish_record


def load_bench_slices(data: Path, count: int) -> list[np.ndarray]:
    """Mid-atrium LA2018 slices when the data is there, else synthetic ones (said in the output)."""
    from sugfw.data import load_volume

    volumes = sorted((data / "imagesTr").glob("*.nii.gz"))
    if volumes:
        slices = []
        for path in volumes[:count]:
            volume, _, _ = load_volume(path)
            slices.append(volume[..., volume.shape[-1] // 2])
        return slices
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:192, :160]
    return [
        (((yy - 90) ** 2 + (xx - 80) ** 2 < 900) + rng.normal(0, 0.1, yy.shape)).astype(np.float32)
        for _ in range(count)
    ]


def sam_settings(model, points: int, k: int, precision: str = "fp32") -> ScoringSettings:
    everything = EverythingSettings.for_model(model, grid=(points,))
    everything = replace(everything, pred_iou_thresh=0.0, stability_thresh=0.0, box_nms_thresh=1.0)
    return ScoringSettings(everything=everything, k=k, precision=precision)


def build_sam(device: str):
    torch.manual_seed(0)  # same random weights in every child process
    return build_model("sam_vit_b", device=device, random_weights=True)


class EncoderClock:
    """Seconds spent inside the image encoder (forward hooks; synchronised on a GPU)."""

    def __init__(self, encoder: torch.nn.Module, device: str) -> None:
        self.seconds, self._start, self._cuda = 0.0, 0.0, device.startswith("cuda")
        encoder.register_forward_pre_hook(lambda *_: self._begin())
        encoder.register_forward_hook(lambda *_: self._end())

    def _now(self) -> float:
        if self._cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    def _begin(self) -> None:
        self._start = self._now()

    def _end(self) -> None:
        self.seconds += self._now() - self._start


def run_authors(slices, points: int, k: int, device: str) -> dict:
    from segment_anything import SamAutomaticMaskGenerator

    model = build_sam(device)
    settings = sam_settings(model, points, k)
    generator = SamAutomaticMaskGenerator(
        model.net,
        points_per_side=points,
        pred_iou_thresh=0.0,
        stability_score_thresh=0.0,
        box_nms_thresh=1.0,
    )
    # The generator discards the image embedding after each run; keep the original's for pooling
    # rather than paying for another encoder pass.
    embeddings = []
    model.image_encoder.register_forward_hook(
        lambda module, inputs, output: embeddings.append(output)
    )
    clock = EncoderClock(model.image_encoder, device)
    unions = []
    start = time.perf_counter()
    for image in slices:
        image_hash, views = build_views(image, settings, model)
        embeddings.clear()
        slice_unions = []
        for view in views.images:
            rgb = (view.cpu().numpy() * 255).round().astype(np.uint8)[..., None].repeat(3, -1)
            masks = generator.generate(rgb)
            limit = settings.everything.max_area_fraction * view.shape[0] * view.shape[1]
            kept = [m["segmentation"] for m in masks if m["area"] < limit]
            union = np.any(kept, axis=0) if kept else np.zeros(view.shape, dtype=bool)
            slice_unions.append(torch.from_numpy(union))
        finish_record("", image_hash, views, slice_unions, 0, embeddings[0][0].cpu(), settings)
        unions.append([u.numpy() for u in slice_unions])
    return {
        "seconds": time.perf_counter() - start,
        "encoder_seconds": clock.seconds,
        "unions": unions,
    }


def run_project(slices, points: int, k: int, device: str, precision: str = "fp32") -> dict:
    model = build_sam(device)
    scorer = Scorer(model, sam_settings(model, points, k, precision))
    clock = EncoderClock(model.image_encoder, device)
    unions = []
    start = time.perf_counter()
    for image in slices:
        _, view_unions = scorer.score_detailed(image)
        unions.append(view_unions)
    return {
        "seconds": time.perf_counter() - start,
        "encoder_seconds": clock.seconds,
        "unions": unions,
    }


def run_litemedsam(slices, points: int, k: int, device: str) -> dict:
    model = build_model("litemedsam", device=device)
    scorer = Scorer(model, ScoringSettings(everything=EverythingSettings.for_model(model), k=k))
    clock = EncoderClock(model.image_encoder, device)
    start = time.perf_counter()
    for image in slices:
        scorer.score_image(image)
    return {"seconds": time.perf_counter() - start, "encoder_seconds": clock.seconds, "unions": []}


def run_project_bf16(slices, points: int, k: int, device: str) -> dict:
    return run_project(slices, points, k, device, precision="bf16")


PATHS = {
    "authors": run_authors,
    "project": run_project,
    "project_bf16": run_project_bf16,
    "litemedsam": run_litemedsam,
}


def child(name: str, slices, points: int, k: int, device: str, queue) -> None:
    torch.set_grad_enabled(False)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    result = PATHS[name](slices, points, k, device)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result["peak_gpu_mb"] = (
        torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else None
    )
    queue.put(result)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=Path("../shared/data/la2018"))
    parser.add_argument("--slices", type=int, default=2)
    parser.add_argument("--points", type=int, default=16, help="SAM points per side")
    parser.add_argument("--k", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--paths", nargs="+", default=list(PATHS), choices=list(PATHS))
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    slices = load_bench_slices(args.data, args.slices)
    source = "LA2018" if (args.data / "imagesTr").is_dir() else "synthetic (LA2018 not found)"
    print(
        f"{len(slices)} {source} slices {[s.shape for s in slices]}, SAM ViT-B (random weights) "
        f"{args.points}x{args.points} points, K={args.k}, device {args.device}, torch threads "
        f"{torch.get_num_threads()}"
    )
    ctx = mp.get_context("spawn")
    results = {}
    for name in args.paths:
        queue = ctx.Queue()
        process = ctx.Process(
            target=child, args=(name, slices, args.points, args.k, args.device, queue)
        )
        process.start()
        while process.is_alive() and queue.empty():
            process.join(timeout=1)
        if queue.empty():
            raise SystemExit(f"{name} path failed (exit code {process.exitcode})")
        results[name] = queue.get()
        process.join()
        r = results[name]
        gpu = f", peak GPU {r['peak_gpu_mb']:.0f} MB" if r["peak_gpu_mb"] is not None else ""
        print(
            f"{name:>12}: {r['seconds']:8.1f} s  {len(slices) / r['seconds']:.4f} slices/s  "
            f"peak RSS {r['peak_rss_mb']:.0f} MB{gpu}  (image encoder {r['encoder_seconds']:.1f} s)"
        )
    for name in ("project", "project_bf16"):
        if "authors" not in results or name not in results:
            continue
        pairs = zip(results["authors"]["unions"], results[name]["unions"])
        ious = [mask_iou(a, b) for sa, sb in pairs for a, b in zip(sa, sb)]
        speedup = results["authors"]["seconds"] / results[name]["seconds"]
        print(
            f"speed-up {name}/authors: {speedup:.2f}x; union-mask IoU authors vs {name}: "
            f"mean {np.mean(ious):.4f}, min {np.min(ious):.4f} over {len(ious)} masks"
        )
        # Both paths run the same encoder on the same views; only the rest can be made faster.
        bound = results["authors"]["seconds"] / results[name]["encoder_seconds"]
        print(
            f"  {name}: encoder {results[name]['encoder_seconds']:.1f} s, everything else "
            f"{results[name]['seconds'] - results[name]['encoder_seconds']:.1f} s; with this "
            "encoder "
            f"the speed-up cannot exceed {bound:.2f}x"
        )
    if args.json:
        summary = {n: {k: v for k, v in r.items() if k != "unions"} for n, r in results.items()}
        args.json.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
