"""Mask-decoder time per prompt: SAM's stock decoder, the shared-image decoder, and the factored
predicted-IoU pass that IoU-first decoding runs on every prompt (``sugfw.models.iou_first``).

Both run in one process on the same random image embedding and the same prompts (SAM ViT-B with
random weights and a point grid; LiteMedSAM with its bundled weights and a box), alternating,
best of ``--repeats``. Prints milliseconds per prompt and the ratio. Usage:

    python benchmarks/bench_decoder.py --prompts 64 --repeats 3
    python benchmarks/bench_decoder.py --prompts 71 --repeats 3   # one LiteMedSAM box grid
"""

from __future__ import annotations

import argparse
import time

import torch

from sugfw.models import build_model


def time_decode(model, embedding: torch.Tensor, prompts: torch.Tensor, share_image: bool) -> float:
    start = time.perf_counter()
    model.decode(embedding, prompts, multimask=True, share_image=share_image)
    if model.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


@torch.inference_mode()
def time_iou_only(model, embedding: torch.Tensor, prompts: torch.Tensor) -> float:
    from sugfw.models.iou_first import predict_iou

    if prompts.shape[-1] == 2:
        labels = torch.ones(len(prompts), 1, dtype=torch.int, device=model.device)
        points = (prompts[:, None].to(model.device), labels)
        sparse, dense = model.prompt_encoder(points=points, boxes=None, masks=None)
    else:
        boxes = prompts.to(model.device)
        sparse, dense = model.prompt_encoder(points=None, boxes=boxes, masks=None)
    pe = model.prompt_encoder.get_dense_pe()
    start = time.perf_counter()
    predict_iou(model.mask_decoder, embedding, pe, sparse, dense[:1], True)
    if model.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    torch.manual_seed(0)
    print(
        f"{args.prompts} prompts per call, best of {args.repeats}, device {args.device}, "
        f"torch threads {torch.get_num_threads()}"
    )
    for name in ("sam_vit_b", "litemedsam"):
        model = build_model(name, device=args.device, random_weights=name != "litemedsam")
        embedding = torch.randn(1, 256, model.grid_size, model.grid_size, device=model.device)
        if name == "litemedsam":
            prompts = torch.tensor([[0.0, 0.0, 128.0, 128.0]]).repeat(args.prompts, 1)
        else:
            prompts = torch.rand(args.prompts, 2) * model.canvas_size
        times = {False: [], True: [], "iou": []}
        for _ in range(args.repeats):
            for share_image in (False, True):
                times[share_image].append(time_decode(model, embedding, prompts, share_image))
            times["iou"].append(time_iou_only(model, embedding, prompts))
        stock, shared, iou = (min(times[s]) / args.prompts * 1000 for s in (False, True, "iou"))
        print(
            f"{name:>10}: stock {stock:.1f} ms/prompt, shared image {shared:.1f} ms/prompt "
            f"({stock / shared:.2f}x), factored IoU only {iou:.1f} ms/prompt ({shared / iou:.2f}x "
            "faster than shared)"
        )


if __name__ == "__main__":
    main()
