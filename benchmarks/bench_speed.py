"""LiteMedSAM scoring speed: the full-decoding path against the IoU-first default, same slices.

``reference`` decodes every prompt's masks with the shared-image decoder and then filters on
predicted IoU (the scoring path before IoU-first decoding); ``default`` is ``Scorer`` as shipped.
Each (path, K, slice) runs in its own child process, the two paths alternating slice by slice so
that a busy machine slows both alike; the model is built before the clock starts. Prints slices/s
of each path and their ratio at every K, peak RSS, the smallest union-mask IoU over all views and
the largest |ΔÛ| between the two paths' records, and where the default path's time goes. Usage:

    python benchmarks/bench_speed.py --slices 3 --k 2 10
    python benchmarks/bench_speed.py --slices 4 --k 2 10 --device cuda   # warm-up run untimed
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch

from sugfw.metrics import mask_iou

PATHS = ("reference", "default")


class Clock:
    """Seconds spent in a wrapped function (and how many prompts it saw)."""

    def __init__(self) -> None:
        self.seconds, self.calls, self.prompts = 0.0, 0, 0

    def wrap(self, fn):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start
                self.calls += 1
                self.prompts += args[3].shape[0]  # sparse prompt embeddings (P, T, C)

        return timed


def child(path: str, image: np.ndarray, k: int, opts: dict, queue) -> None:
    torch.set_grad_enabled(False)
    if opts["threads"]:
        torch.set_num_threads(opts["threads"])
    cuda = opts["device"].startswith("cuda")
    import sugfw.models.base as base
    import sugfw.models.decoder as decoder
    import sugfw.scoring as scoring
    from sugfw.everything import EverythingSettings, everything_union
    from sugfw.models import build_model

    model = build_model("litemedsam", device=opts["device"])
    full, iou_only, encoder = Clock(), Clock(), Clock()
    decoder.decode_prompts_on_one_image = full.wrap(decoder.decode_prompts_on_one_image)
    base.decode_prompts_on_one_image = decoder.decode_prompts_on_one_image
    decoder.predict_iou = iou_only.wrap(decoder.predict_iou)
    if path == "reference":
        scoring.everything_union = partial(everything_union, iou_first=False)
    original_encode = model.encode

    def encode(batch: torch.Tensor) -> torch.Tensor:
        start = time.perf_counter()
        out = original_encode(batch)
        if cuda:
            torch.cuda.synchronize()
        encoder.seconds += time.perf_counter() - start
        return out

    model.encode = encode
    grid = tuple(opts["grid"]) if opts["grid"] else None
    settings = scoring.ScoringSettings(
        everything=EverythingSettings.for_model(model, grid=grid), k=k
    )
    batching = scoring.Batching.for_device(model.device, k)
    if path == "reference" and not cuda:
        batching = scoring.Batching(encoder_batch_size=1, prompt_batch_size=64)  # before IoU-first
    scorer = scoring.Scorer(model, settings, batching=batching)
    if cuda:
        scorer.score_detailed(image)  # warm-up: CUDA context, kernels, allocator
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        for clock in (full, iou_only, encoder):
            clock.seconds = clock.calls = clock.prompts = 0
    start = time.perf_counter()
    record, unions = scorer.score_detailed(image)
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    queue.put(
        {
            "seconds": seconds,
            "encoder": encoder.seconds,
            "iou_only": iou_only.seconds,
            "iou_only_prompts": iou_only.prompts,
            "full": full.seconds,
            "full_prompts": full.prompts,
            "uncertainty": record.uncertainty,
            "uncertainty_map": record.uncertainty_map.astype(np.float32),
            "kept": record.masks_kept,
            "unions": unions,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20 if cuda else 0.0,
        }
    )


def run_child(ctx, path: str, image: np.ndarray, k: int, opts: dict) -> dict:
    queue = ctx.Queue()
    process = ctx.Process(target=child, args=(path, image, k, opts, queue))
    process.start()
    while process.is_alive() and queue.empty():
        process.join(timeout=1)
    if queue.empty():
        raise SystemExit(f"{path} failed (exit code {process.exitcode})")
    result = queue.get()
    process.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=Path("../shared/data/la2018"))
    parser.add_argument("--slices", type=int, default=3)
    parser.add_argument("--k", type=int, nargs="+", default=[2, 10])
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--grid", type=int, nargs="+", help="box sides (default: the model's)")
    args = parser.parse_args()
    opts = {"threads": args.threads, "device": args.device, "grid": args.grid}
    from bench_scoring import load_bench_slices

    slices = load_bench_slices(args.data, args.slices)
    source = "LA2018" if (args.data / "imagesTr").is_dir() else "synthetic (LA2018 not found)"
    print(
        f"{len(slices)} {source} slices {[s.shape for s in slices]}, LiteMedSAM defaults, "
        f"device {args.device}, torch threads {args.threads or torch.get_num_threads()}"
    )
    ctx = mp.get_context("spawn")
    for k in args.k:
        results: dict[str, list[dict]] = {p: [] for p in PATHS}
        for image in slices:
            for path in PATHS:
                results[path].append(run_child(ctx, path, image, k, opts))
        ious = [
            mask_iou(a, b)
            for ref, new in zip(results["reference"], results["default"])
            for a, b in zip(ref["unions"], new["unions"])
        ]
        du = max(abs(r["uncertainty"] - n["uncertainty"]) for r, n in zip(*results.values()))
        dmap = max(
            float(np.abs(r["uncertainty_map"] - n["uncertainty_map"]).max())
            for r, n in zip(*results.values())
        )
        rate = {p: len(slices) / sum(r["seconds"] for r in results[p]) for p in PATHS}
        print(f"K={k}:")
        for path in PATHS:
            rs = results[path]
            per_slice = sum(r["seconds"] for r in rs) / len(rs)
            print(
                f"  {path:>9}: {rate[path]:.4f} slices/s ({per_slice:.1f} s/slice), "
                f"peak RSS {max(r['peak_rss_mb'] for r in rs):.0f} MB"
                + (
                    f", peak GPU {max(r['peak_gpu_mb'] for r in rs):.0f} MB"
                    if opts["device"] != "cpu"
                    else ""
                )
            )
        same_kept = all(r["kept"] == n["kept"] for r, n in zip(*results.values()))
        print(
            f"  ratio default/reference: {rate['default'] / rate['reference']:.2f}x; union IoU min "
            f"{min(ious):.6f} over {len(ious)} view masks; max |dU| {du:.2e}; "
            f"max |d U-map| {dmap:.2e}; masks kept equal: {same_kept}"
        )
        for path in PATHS:
            rs = results[path]
            total = sum(r["seconds"] for r in rs)
            parts = {key: sum(r[key] for r in rs) for key in ("encoder", "iou_only", "full")}
            rest = total - sum(parts.values())
            n_iou, n_full = (
                sum(r[key] for r in rs) / len(rs) for key in ("iou_only_prompts", "full_prompts")
            )
            print(
                f"  {path:>9} profile per slice: encoder {parts['encoder'] / len(rs):.2f} s, "
                f"IoU-only decoding {parts['iou_only'] / len(rs):.2f} s ({n_iou:.0f} prompts), "
                f"full decoding {parts['full'] / len(rs):.2f} s ({n_full:.0f} prompts), "
                f"rest {rest / len(rs):.2f} s"
            )
        enc = sum(r["encoder"] for r in results["reference"])
        bound = sum(r["seconds"] for r in results["reference"]) / enc
        print(f"  with this image encoder untouched the ratio cannot exceed {bound:.2f}x")


if __name__ == "__main__":
    main()
