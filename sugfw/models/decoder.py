"""SAM's mask decoder run for many prompts on one image without copying the image per prompt.

The stock ``MaskDecoder.predict_masks`` repeats the 256 × 64 × 64 image embedding and its
positional encoding once per prompt before the two-way transformer. Until the first
image-to-token attention updates it, that embedding is the same for every prompt, so the first
block's image projections (keys and values of token-to-image attention, queries of
image-to-token attention) need computing only once. Passing the transformer a batch of one image
and letting the attention products broadcast over the prompts does exactly that; after the first
block the image stream is per prompt, as in the stock decoder. Same weights, same operations,
same outputs up to floating-point rounding (a test compares both on SAM and LiteMedSAM decoders).

Everything mode keeps only masks whose predicted IoU passes a threshold, and at LiteMedSAM's
defaults few do. ``decode_passing_prompts`` therefore first predicts every prompt's IoU without
forming any image stream (``sugfw.models.iou_first``), then decodes in full, with the function
below, only the prompts that pass; the others are never upscaled.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from sugfw.models.iou_first import predict_iou

IOU_MARGIN = 1e-3
"""Prompts within this of the threshold by the factored IoU are decoded in full and judged on
the full decoder's IoU. The two agree to ~1e-6 in fp32 (tests measure it): no passing prompt is
lost."""
CPU_FULL_DECODE_CHUNK = 64
CPU_IOU_CHUNK = 32
"""Prompts per factored-IoU pass on a CPU in torch (``predict_iou``): 32 measured 25-30 % less
CPU time than 71-128 at once on LiteMedSAM's grids."""
RUNTIME_IOU_CHUNKS = (16, 8)
"""Static prompt chunks the IoU pass is exported for on a CPU runtime: 16 at a time, the rest in
8s (LiteMedSAM's 56-71 boxes per view pad to at most 7 more). Static chunks beat a graph with a
dynamic prompt count (7.7 against 10.2 ms per prompt); with the image's products made once per
view, (16, 8) took 472-587 ms on 56-71 prompts with OpenVINO, (32, 8) 484-592, (16, 4) 550-619,
(8, 2) 501-644."""
IOU_MARGIN_AUTOCAST = 0.05
"""The same under bf16/fp16 autocast, where the factored IoU (kept in fp32) and the
reduced-precision full decoder's differ by up to ~1e-2."""


def decode_prompts_on_one_image(
    decoder: nn.Module,
    image_embedding: torch.Tensor,
    image_pe: torch.Tensor,
    sparse_prompt_embeddings: torch.Tensor,
    no_mask_embedding: torch.Tensor,
    multimask_output: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The stock ``MaskDecoder.forward`` for P prompts on one image, sharing the image.

    ``image_embedding`` and ``image_pe`` are (1, C, h, w); ``sparse_prompt_embeddings`` is
    (P, T, C); ``no_mask_embedding`` is the prompt encoder's dense embedding for "no mask input"
    ((1, C, h, w), identical for every prompt). Returns mask logits (P, M, 4h, 4w) and predicted
    IoU (P, M) with M = 3 when ``multimask_output`` else 1.
    """
    if image_embedding.shape[0] != 1 or no_mask_embedding.shape[0] != 1:
        raise ValueError(
            "decode_prompts_on_one_image expects one image embedding and one dense embedding"
        )
    n_prompts = sparse_prompt_embeddings.shape[0]
    output_tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], dim=0)
    tokens = torch.cat(
        (output_tokens.unsqueeze(0).expand(n_prompts, -1, -1), sparse_prompt_embeddings), dim=1
    )
    src = image_embedding + no_mask_embedding
    _, channels, height, width = src.shape

    # The first block's image-to-token attention gives every prompt its own image stream, so the
    # transformer returns (P, h·w, C) image features.
    queries, keys = decoder.transformer(src, image_pe, tokens)
    iou_token_out = queries[:, 0, :]
    mask_tokens_out = queries[:, 1 : 1 + decoder.num_mask_tokens, :]

    upscaled = decoder.output_upscaling(
        keys.transpose(1, 2).reshape(n_prompts, channels, height, width)
    )
    hyper_in = torch.stack(
        [mlp(mask_tokens_out[:, i, :]) for i, mlp in enumerate(decoder.output_hypernetworks_mlps)],
        dim=1,
    )
    b, c, h, w = upscaled.shape
    masks = (hyper_in @ upscaled.view(b, c, h * w)).view(b, -1, h, w)
    iou_pred = decoder.iou_prediction_head(iou_token_out)

    chosen = slice(1, None) if multimask_output else slice(0, 1)
    return masks[:, chosen], iou_pred[:, chosen]


def decode_passing_prompts(
    decoder: nn.Module,
    image_embedding: torch.Tensor,
    image_pe: torch.Tensor,
    sparse_prompt_embeddings: torch.Tensor,
    no_mask_embedding: torch.Tensor,
    multimask_output: bool,
    iou_thresh: float,
    iou_pass: Callable[..., torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``decode_prompts_on_one_image`` restricted to prompts with a predicted IoU > ``iou_thresh``.

    ``iou_pass``: ``predict_iou`` exported to a CPU runtime (``sugfw.models.runtime``), called as
    (image embedding, sparse prompts, image pe, no-mask embedding); torch's when None.

    Returns the full decoder's mask logits and IoU for the prompts (in their order) with at least
    one mask above the threshold; other masks of those prompts are returned too, for the caller's
    own per-mask filter. With no such prompt: empty tensors, and no mask is ever upscaled.
    """
    device_type = image_embedding.device.type
    margin = IOU_MARGIN_AUTOCAST if torch.is_autocast_enabled(device_type) else IOU_MARGIN
    with torch.autocast(device_type, enabled=False):
        if iou_pass is not None:
            iou = iou_pass(
                image_embedding.float(),
                sparse_prompt_embeddings.float(),
                image_pe.float(),
                no_mask_embedding.float(),
            )
        else:
            iou = predict_iou(
                decoder,
                image_embedding.float(),
                image_pe.float(),
                sparse_prompt_embeddings.float(),
                no_mask_embedding.float(),
                multimask_output,
                chunk=CPU_IOU_CHUNK if device_type == "cpu" else None,
            )
    candidates = (iou > iou_thresh - margin).any(dim=1).nonzero().flatten()
    if len(candidates) == 0:
        _, _, height, width = image_embedding.shape
        masks = iou.new_zeros(0, iou.shape[1], 4 * height, 4 * width)
        return masks, iou.new_zeros(0, iou.shape[1])
    # The full decoder's image stream is 4 MB per prompt: on a CPU, decode candidates 64 at a time.
    step = CPU_FULL_DECODE_CHUNK if device_type == "cpu" else len(candidates)
    decoded = [
        decode_prompts_on_one_image(
            decoder,
            image_embedding,
            image_pe,
            sparse_prompt_embeddings[chunk],
            no_mask_embedding,
            multimask_output,
        )
        for chunk in candidates.split(step)
    ]
    masks = torch.cat([m for m, _ in decoded])
    full_iou = torch.cat([i for _, i in decoded])
    passing = (full_iou > iou_thresh).any(dim=1)
    return masks[passing], full_iou[passing]
