"""SAM's mask decoder run for many prompts on one image without copying the image per prompt.

The stock ``MaskDecoder.predict_masks`` repeats the 256 × 64 × 64 image embedding and its
positional encoding once per prompt before the two-way transformer. Until the first
image-to-token attention updates it, that embedding is the same for every prompt, so the first
block's image projections (keys and values of token-to-image attention, queries of
image-to-token attention) need computing only once. Passing the transformer a batch of one image
and letting the attention products broadcast over the prompts does exactly that; after the first
block the image stream is per prompt, as in the stock decoder. Same weights, same operations,
same outputs up to floating-point rounding (a test compares both on SAM and LiteMedSAM decoders).
"""

from __future__ import annotations

import torch
from torch import nn


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
        raise ValueError("decode_prompts_on_one_image expects one image embedding and one dense embedding")
    n_prompts = sparse_prompt_embeddings.shape[0]
    output_tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], dim=0)
    tokens = torch.cat((output_tokens.unsqueeze(0).expand(n_prompts, -1, -1), sparse_prompt_embeddings), dim=1)
    src = image_embedding + no_mask_embedding
    _, channels, height, width = src.shape

    # The first block's image-to-token attention gives every prompt its own image stream, so the
    # transformer returns (P, h·w, C) image features.
    queries, keys = decoder.transformer(src, image_pe, tokens)
    iou_token_out = queries[:, 0, :]
    mask_tokens_out = queries[:, 1 : 1 + decoder.num_mask_tokens, :]

    upscaled = decoder.output_upscaling(keys.transpose(1, 2).reshape(n_prompts, channels, height, width))
    hyper_in = torch.stack(
        [mlp(mask_tokens_out[:, i, :]) for i, mlp in enumerate(decoder.output_hypernetworks_mlps)], dim=1
    )
    b, c, h, w = upscaled.shape
    masks = (hyper_in @ upscaled.view(b, c, h * w)).view(b, -1, h, w)
    iou_pred = decoder.iou_prediction_head(iou_token_out)

    chosen = slice(1, None) if multimask_output else slice(0, 1)
    return masks[:, chosen], iou_pred[:, chosen]
