"""LiteMedSAM scoring speed on the same slices, each path in its own process.

Paths (``--paths``): ``full`` decodes every prompt's masks, then filters on predicted IoU (the path
before IoU-first decoding); ``before`` is another checkout's default (``--before``); ``torch`` is
today's path with ``--runtime torch`` (the IoU pass in chunks of ``CPU_IOU_CHUNK`` prompts);
``default`` is ``ScorerSpec`` as shipped (on a CPU: the image encoder and the IoU pass on OpenVINO,
else ONNX Runtime). Each (path, K, slice) runs in its own child process, the paths alternating slice
by slice so that a busy machine slows all alike; the model is built (and the encoder exported or
loaded) before the clock starts. Prints s/slice of each path and the ratio to the first path, peak
RSS, the smallest union-mask IoU over all views, the largest |ΔÛ| and feature difference between the
first path's records and each other path's, and each part's time per slice with its FLOP count and
achieved GFLOP/s (FLOPs counted once with torch's FlopCounterMode). ``--encoders`` also times the
image encoder alone on every installed runtime. Usage:

    python benchmarks/bench_speed.py --slices 3 --k 2 10 --encoders
    python benchmarks/bench_speed.py --slices 4 --k 2 10 --paths full default --device cuda
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import sys
import time
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import torch

PATHS = ("before", "full", "torch", "default")
RUNTIMES = ("torch", "onnxruntime", "openvino")


class Clock:
    """Seconds spent in a wrapped function (and how many prompts it saw)."""

    def __init__(self) -> None:
        self.seconds, self.calls, self.prompts = 0.0, 0, 0

    def wrap(self, fn, prompts_at: int | None = 3):
        """``fn`` timed; its argument ``prompts_at`` holds the sparse prompt embeddings (None:
        the call's prompts are not counted)."""

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start
                self.calls += 1
                if prompts_at is not None:
                    self.prompts += args[prompts_at].shape[0]  # (P, T, C)

        return timed


def child(path: str, image: np.ndarray, k: int, opts: dict, queue) -> None:
    if path == "before":
        # Another checkout's sugfw (``--before``), imported before anything of this one.
        sys.path.insert(0, opts["before"])
    torch.set_grad_enabled(False)
    if opts["threads"]:
        torch.set_num_threads(opts["threads"])
    cuda = opts["device"].startswith("cuda")
    import sugfw.models.base as base
    import sugfw.models.decoder as decoder
    import sugfw.scoring as scoring
    from sugfw.everything import everything_union
    from sugfw.pipeline import ScorerSpec

    spec = ScorerSpec(
        k=k, device=opts["device"], grid=tuple(opts["grid"]) if opts["grid"] else None
    )
    if path != "before":  # a checkout from before the CPU runtimes has no runtime setting
        spec = replace(spec, runtime="auto" if path == "default" else "torch")
    if path == "full" and not cuda:
        spec = replace(spec, encoder_batch=1, prompt_batch=64)  # the settings before IoU-first
    scorer = spec.build()
    model = scorer.model
    full, iou_only, encoder = Clock(), Clock(), Clock()
    decoder.decode_prompts_on_one_image = full.wrap(decoder.decode_prompts_on_one_image)
    base.decode_prompts_on_one_image = decoder.decode_prompts_on_one_image
    decoder.predict_iou = iou_only.wrap(decoder.predict_iou)
    runners = getattr(model, "_runners", {})
    for name in [name for name in runners if name.startswith("iou")]:
        # The runtime's IoU pass: the image's products once per view, then chunk by chunk
        # (prompts counted with their padding).
        counted = None if name == "iou_image" else 1
        runners[name] = iou_only.wrap(runners[name], prompts_at=counted)
    if path == "full":
        scoring.everything_union = partial(everything_union, iou_first=False)
    original_encode = model.encode

    def encode(batch: torch.Tensor) -> torch.Tensor:
        start = time.perf_counter()
        out = original_encode(batch)
        if cuda:
            torch.cuda.synchronize()
        encoder.seconds += time.perf_counter() - start
        encoder.calls += len(batch)
        return out

    model.encode = encode
    # Warm: a runtime's first inference allocates and tunes; a long-lived scorer has done that.
    original_encode(torch.zeros(1, 3, model.canvas_size, model.canvas_size, device=model.device))
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
            "runtime": getattr(model, "runtime", "torch"),
            "encoder": encoder.seconds,
            "views": encoder.calls,
            "iou_only": iou_only.seconds,
            "iou_only_prompts": iou_only.prompts,
            "full": full.seconds,
            "full_prompts": full.prompts,
            "uncertainty": record.uncertainty,
            "uncertainty_map": record.uncertainty_map.astype(np.float32),
            "features": np.concatenate([record.features_pgdr, record.features_mean]),
            "kept": record.masks_kept,
            "unions": unions,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20 if cuda else 0.0,
        }
    )


def encoder_child(runtime: str, image: np.ndarray, opts: dict, queue) -> None:
    """The image encoder alone on ``runtime``: best of ``repeats`` on one prepared canvas."""
    torch.set_grad_enabled(False)
    if opts["threads"]:
        torch.set_num_threads(opts["threads"])
    from sugfw.intensity import scale_intensities
    from sugfw.models import build_model
    from sugfw.models.base import CanvasGeometry

    model = build_model("litemedsam", device=opts["device"])
    used = model.use_runtime(runtime)
    scaled = torch.from_numpy(scale_intensities(image, (0.5, 99.5)))
    canvas = model.prepare([scaled], [CanvasGeometry.fit(*image.shape, model.canvas_size)])
    model.encode(canvas)  # first call: allocation, lazy initialisation
    times = []
    for _ in range(opts["repeats"]):
        start = time.perf_counter()
        model.encode(canvas)
        times.append(time.perf_counter() - start)
    queue.put({"runtime": used, "seconds": min(times)})


def part_flops(image: np.ndarray) -> dict[str, float]:
    """FLOPs of one encoder view, one prompt's factored IoU pass and one full decode (torch)."""
    from torch.utils.flop_counter import FlopCounterMode

    from sugfw.models import build_model
    from sugfw.models.base import CanvasGeometry
    from sugfw.models.decoder import decode_prompts_on_one_image, predict_iou

    torch.set_grad_enabled(False)
    model = build_model("litemedsam", device="cpu")
    geometry = CanvasGeometry.fit(*image.shape, model.canvas_size)
    canvas = model.prepare([torch.zeros(image.shape)], [geometry])
    prompts = model.prompt_grid(geometry, model.defaults.grid, "boxes")
    sparse, dense = model.prompt_encoder(points=None, boxes=prompts, masks=None)
    pe = model.prompt_encoder.get_dense_pe()
    flops = {}
    with FlopCounterMode(display=False) as counter:
        embedding = model.image_encoder(canvas)
    flops["encoder"] = counter.get_total_flops()
    with FlopCounterMode(display=False) as counter:
        predict_iou(model.mask_decoder, embedding, pe, sparse, dense[:1], False)
    flops["iou_only"] = counter.get_total_flops() / len(prompts)
    with FlopCounterMode(display=False) as counter:
        decode_prompts_on_one_image(model.mask_decoder, embedding, pe, sparse[:1], dense[:1], False)
    flops["full"] = counter.get_total_flops()
    return flops


def run_child(ctx, target, *args) -> dict:
    queue = ctx.Queue()
    process = ctx.Process(target=target, args=(*args, queue))
    process.start()
    while process.is_alive() and queue.empty():
        process.join(timeout=1)
    if queue.empty():
        raise SystemExit(f"{args[0]} failed (exit code {process.exitcode})")
    result = queue.get()
    process.join()
    return result


def report_k(k: int, results: dict[str, list[dict]], flops: dict[str, float], opts: dict) -> None:
    from sugfw.metrics import mask_iou

    paths = list(results)
    first = paths[0]
    per_slice = {p: sum(r["seconds"] for r in results[p]) / len(results[p]) for p in paths}
    print(f"K={k}:")
    for path in paths:
        rs = results[path]
        gpu = f", peak GPU {max(r['peak_gpu_mb'] for r in rs):.0f} MB" if opts["cuda"] else ""
        print(
            f"  {path:>8}: {per_slice[path]:.2f} s/slice ({1 / per_slice[path]:.4f} slices/s), "
            f"ratio {per_slice[first] / per_slice[path]:.2f}x, encoder on {rs[0]['runtime']}, "
            f"peak RSS {max(r['peak_rss_mb'] for r in rs):.0f} MB{gpu}"
        )
    for path in paths[1:]:
        pairs = list(zip(results[first], results[path]))
        ious = [mask_iou(a, b) for ref, new in pairs for a, b in zip(ref["unions"], new["unions"])]
        du = max(abs(ref["uncertainty"] - new["uncertainty"]) for ref, new in pairs)
        dmap = max(
            float(np.abs(ref["uncertainty_map"] - new["uncertainty_map"]).max())
            for ref, new in pairs
        )
        dfeat = max(float(np.abs(ref["features"] - new["features"]).max()) for ref, new in pairs)
        same = all(ref["kept"] == new["kept"] for ref, new in pairs)
        print(
            f"  {path} vs {first}: union IoU min {min(ious):.6f} over {len(ious)} view masks; "
            f"max |dU| {du:.2e}; max |d U-map| {dmap:.2e}; max |d feature| {dfeat:.2e}; "
            f"masks kept equal: {same}"
        )
    for path in paths:
        rs = results[path]
        n = len(rs)
        parts = {key: sum(r[key] for r in rs) / n for key in ("encoder", "iou_only", "full")}
        work = {
            "encoder": flops["encoder"] * sum(r["views"] for r in rs) / n,
            "iou_only": flops["iou_only"] * sum(r["iou_only_prompts"] for r in rs) / n,
            "full": flops["full"] * sum(r["full_prompts"] for r in rs) / n,
        }
        rest = per_slice[path] - sum(parts.values())
        cells = [
            f"{name} {parts[key] * 1e3:.0f} ms ({work[key] / 1e9:.1f} GFLOP, "
            f"{work[key] / 1e9 / max(parts[key], 1e-9):.1f} GFLOP/s)"
            for name, key in (("encoder", "encoder"), ("IoU-only", "iou_only"), ("full", "full"))
        ]
        print(f"  {path:>8} per slice: " + ", ".join(cells) + f", rest {rest * 1e3:.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=Path("../shared/data/la2018"))
    parser.add_argument("--slices", type=int, default=3)
    parser.add_argument("--k", type=int, nargs="+", default=[2, 10])
    parser.add_argument("--paths", nargs="+", choices=PATHS, default=["torch", "default"])
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--grid", type=int, nargs="+", help="box sides (default: the model's)")
    parser.add_argument(
        "--encoders", action="store_true", help="also time the encoder alone on each runtime"
    )
    parser.add_argument("--repeats", type=int, default=5, help="encoder timings per runtime")
    parser.add_argument(
        "--before",
        type=Path,
        help="a checkout of an earlier version (e.g. `git worktree add /tmp/sugfw-before "
        "f8fc11a`): its default scoring runs as the path 'before'",
    )
    args = parser.parse_args()
    opts = {
        "threads": args.threads,
        "device": args.device,
        "grid": args.grid,
        "cuda": args.device.startswith("cuda"),
        "repeats": args.repeats,
        "before": str(args.before.resolve()) if args.before else None,
    }
    if "before" in args.paths and not args.before:
        parser.error("--paths before needs --before CHECKOUT")
    from bench_scoring import load_bench_slices

    slices = load_bench_slices(args.data, args.slices)
    source = "LA2018" if (args.data / "imagesTr").is_dir() else "synthetic (LA2018 not found)"
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"{len(slices)} {source} slices {[s.shape for s in slices]}, LiteMedSAM defaults, "
        f"device {args.device}, torch threads {args.threads or torch.get_num_threads()}, "
        f"load average {load} at start"
    )
    flops = part_flops(slices[0])
    print(
        f"FLOPs: encoder {flops['encoder'] / 1e9:.1f} G per view, factored IoU "
        f"{flops['iou_only'] / 1e9:.2f} G per prompt, full decode {flops['full'] / 1e9:.2f} G per "
        "prompt"
    )
    ctx = mp.get_context("spawn")
    if args.encoders:
        for runtime in RUNTIMES:
            r = run_child(ctx, encoder_child, runtime, slices[0], opts)
            print(
                f"  encoder on {runtime} (ran on {r['runtime']}): {r['seconds'] * 1e3:.0f} ms per "
                f"view, {flops['encoder'] / 1e9 / r['seconds']:.1f} GFLOP/s"
            )
    for k in args.k:
        results: dict[str, list[dict]] = {p: [] for p in args.paths}
        for image in slices:
            for path in args.paths:
                results[path].append(run_child(ctx, child, path, image, k, opts))
        report_k(k, results, flops, opts)
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
