"""Predicted IoU for many prompts on one image without forming any prompt's image stream.

In SAM's two-way transformer the image stream (h·w rows of C channels) starts the same for every
prompt and changes only through image-to-token attention, whose output per row is
``out_proj`` of a softmax combination of the prompt's few token values (heads × tokens vectors).
Each LayerNorm then centres and rescales every row. So at any depth one prompt's stream is exactly

    X[n] = a[n] · B[n] + R[n] @ W + β

with B (h·w, C) shared by all prompts, a (h·w,) and R (h·w, r) per-row coefficients of the prompt,
W (r, C) a handful of vectors of the prompt (r grows by heads × tokens per block) and β shared.
Everything the tokens (and so the IoU head) read from the stream is cheap in this form:

- token-to-image attention needs the scores q·k[n] of a few queries and the pooled values
  Σ p[n] v[n]; with k = W_k x + b_k these are q·(W_k B[n]) with W_k B projected once per image,
  plus R[n] · (W W_kᵀ q), and the pooled values follow the same way;
- image-to-token attention needs, per row, its scores against the few token keys, which split the
  same way, and adds softmax weights (new columns of R) times per-token vectors (new rows of W);
- LayerNorm needs each row's mean and variance, which follow from B, W and R without the row.

Per prompt this replaces the (h·w × C) projections of the stock decoder by products of size
(h·w × r) with r ≈ 2 · heads · tokens. The result equals the stock decoder's IoU up to
floating-point rounding (tests bound the difference); masks are then decoded in full only for
the prompts whose IoU passes the filter (``sugfw.models.decoder``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class _Block:
    """Rows of W in the form they were made: row (t, h) = Σ_d coords[t, h, d] · basis[h, d], or
    (``coords`` None) rows shared by every prompt, ``basis`` itself."""

    coords: torch.Tensor | None  # (P, T, H, d)
    basis: torch.Tensor  # (H, d, C), or (k, C) when shared

    @property
    def rows(self) -> int:
        if self.coords is None:
            return self.basis.shape[0]
        return self.coords.shape[1] * self.coords.shape[2]


@dataclass
class _Stream:
    """One batch of prompts' image streams in factored form: a·B + Rᵀ W + beta."""

    base: torch.Tensor  # (N, C), shared
    scale: torch.Tensor | None  # (P, N) per-row factor of ``base``; None means 1
    coeff: torch.Tensor | None  # (P, r, N): R transposed, the N axis contiguous; None: r = 0
    vectors: torch.Tensor  # (P, r, C)
    beta: torch.Tensor  # (C,), shared
    blocks: tuple[_Block, ...] = ()
    """W again, block by block in row order: each attention block's rows lie in a head's
    d-dimensional output space, which makes their products with the image d/C as costly."""


class _Shared:
    """Products of the image with fixed weights, the same for every prompt of one image: made
    once per image, not once per chunk of prompts.

    They are made in the same order on every pass, which lets an exported pass take them as
    inputs: ``made`` lists them in that order, and ``_Shared(given)`` hands them out again."""

    def __init__(self, given: tuple[torch.Tensor, ...] = ()) -> None:
        self._products: dict[tuple[int, str], torch.Tensor] = {}
        self._given = list(given)
        self.made: list[torch.Tensor] = []

    def product(self, owner: nn.Module, name: str, compute) -> torch.Tensor:
        key = (id(owner), name)
        if key not in self._products:
            self._products[key] = self._given.pop(0) if self._given else compute()
            self.made.append(self._products[key])
        return self._products[key]


def _heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(…, n, H·d) → (…, n, H, d)."""
    return x.view(*x.shape[:-1], num_heads, x.shape[-1] // num_heads)


def _token_to_stream(
    attn: nn.Module, tokens_q: torch.Tensor, stream: _Stream, pe: torch.Tensor, shared: _Shared
) -> torch.Tensor:
    """``attn(q=tokens_q, k=stream + pe, v=stream)`` of SAM's ``Attention``, factored stream."""
    heads = attn.num_heads
    n_prompts, n_tokens = tokens_q.shape[:2]
    q = attn.q_proj(tokens_q)
    d = q.shape[-1] // heads
    q = _heads(q / math.sqrt(d), heads)  # (P, T, H, d)
    wk, wv = attn.k_proj.weight, attn.v_proj.weight
    # Scores (P, H·T, N): the softmax runs over contiguous rows. The key bias and any constant
    # part of the stream shift every score of a row alike, which the softmax ignores.
    base_k = shared.product(attn, "base_k", lambda: _heads(stream.base @ wk.T, heads))  # (N, H, d)
    pe_k = shared.product(attn, "pe_k", lambda: _heads(pe @ wk.T, heads))
    if stream.scale is None:
        by_head = torch.einsum("pthd,nhd->phtn", q, base_k + pe_k)
    else:
        by_head = torch.einsum("pthd,nhd->phtn", q, base_k) * stream.scale[:, None, None, :]
        by_head = by_head + torch.einsum("pthd,nhd->phtn", q, pe_k)
    scores = by_head.reshape(n_prompts, heads * n_tokens, -1)
    if stream.coeff is not None:
        # R[n] · (W W_kᵀ q): project the prompt's few vectors, not its N rows.
        vec_k = _heads(stream.vectors @ wk.T, heads)  # (P, r, H, d)
        mixed = torch.einsum("prhd,pthd->phtr", vec_k, q).flatten(1, 2)  # (P, H·T, r)
        scores = torch.baddbmm(scores, mixed, stream.coeff)
    probs = torch.softmax(scores, dim=-1)  # (P, H·T, N)
    # Pooled values Σ_n p[n] v[n] with v[n] = a[n] Wv B[n] + Wv (R[n] W + beta) + bv.
    base_v = shared.product(attn, "base_v", lambda: _heads(stream.base @ wv.T, heads))
    weighted = probs if stream.scale is None else probs * stream.scale[:, None, :]
    out = torch.einsum("phtn,nhd->pthd", weighted.view(n_prompts, heads, n_tokens, -1), base_v)
    out = out + _heads(stream.beta @ wv.T + attn.v_proj.bias, heads)  # probabilities sum to one
    if stream.coeff is not None:
        vec_v = _heads(stream.vectors @ wv.T, heads)  # (P, r, H, d)
        pooled = torch.bmm(probs, stream.coeff.transpose(1, 2))  # (P, H·T, r)
        out = out + torch.einsum(
            "phtr,prhd->pthd", pooled.view(n_prompts, heads, n_tokens, -1), vec_v
        )
    return attn.out_proj(out.reshape(n_prompts, n_tokens, -1))


def _stream_to_token(
    attn: nn.Module,
    stream: _Stream,
    pe: torch.Tensor,
    tokens_k: torch.Tensor,
    tokens_v: torch.Tensor,
    shared: _Shared,
) -> _Stream:
    """``stream + attn(q=stream + pe, k=tokens_k, v=tokens_v)``, still factored."""
    heads = attn.num_heads
    n_prompts, n_tokens = tokens_k.shape[:2]
    k = attn.k_proj(tokens_k)  # (P, T, Ci)
    d = k.shape[-1] // heads
    k = _heads(k / math.sqrt(d), heads)  # (P, T, H, d)
    wq, bq = attn.q_proj.weight, attn.q_proj.bias
    # Scores (P, T, H, N) per row against the prompt's few keys: the rows of R they become; the
    # softmax over T then reads contiguous runs of H·N.
    base_q = shared.product(attn, "base_q", lambda: _heads(stream.base @ wq.T, heads))
    pe_q = shared.product(attn, "pe_q", lambda: _heads(pe @ wq.T + stream.beta @ wq.T + bq, heads))
    if stream.scale is None:
        scores = torch.einsum("nhd,pthd->pthn", base_q + pe_q, k)
    else:
        scores = torch.einsum("nhd,pthd->pthn", base_q, k) * stream.scale[:, None, None, :]
        scores = scores + torch.einsum("nhd,pthd->pthn", pe_q, k)
    scores = scores.reshape(n_prompts, n_tokens * heads, -1)  # (P, T·H, N)
    if stream.coeff is not None:
        vec_q = _heads(stream.vectors @ wq.T, heads)  # (P, r, H, d)
        mixed = torch.einsum("prhd,pthd->pthr", vec_q, k).flatten(1, 2)  # (P, T·H, r)
        scores = torch.baddbmm(scores, mixed, stream.coeff)
    probs = torch.softmax(scores.view(n_prompts, n_tokens, -1), dim=1).view_as(scores)
    v = _heads(attn.v_proj(tokens_v), heads)  # (P, T, H, d)
    # Row n's output is Σ_{t,h} p[n,t,h] · out_proj_h(v[t,h]): new rows of R, new vectors.
    w_out = attn.out_proj.weight.view(attn.out_proj.weight.shape[0], heads, d)  # (C, H, d)
    vectors = torch.einsum("pthd,chd->pthc", v, w_out).flatten(1, 2)  # (P, T·H, C)
    return _Stream(
        stream.base,
        stream.scale,
        probs if stream.coeff is None else torch.cat([stream.coeff, probs], dim=1),
        torch.cat([stream.vectors.expand(n_prompts, -1, -1), vectors], dim=1),
        stream.beta + attn.out_proj.bias,
        (*stream.blocks, _Block(v, w_out.permute(1, 2, 0))),
    )


def _layer_norm(norm: nn.LayerNorm, stream: _Stream, shared: _Shared) -> _Stream:
    """``norm`` applied to every row of the factored stream: centre, rescale, still factored."""
    n_prompts, _, n_rows = stream.coeff.shape
    channels = stream.base.shape[-1]
    # Fold beta into the low-rank part as a row of ones, then centre every vector.
    ones = stream.coeff.new_ones(1, 1, n_rows).expand(n_prompts, 1, n_rows)
    coeff = torch.cat([stream.coeff, ones], dim=1)  # (P, r, N)
    vectors = torch.cat([stream.vectors, stream.beta.expand(n_prompts, 1, channels)], dim=1)
    vectors = vectors - vectors.mean(-1, keepdim=True)
    # Centring a row centres what it is made of: each block's basis.
    blocks = tuple(
        _Block(b.coords, b.basis - b.basis.mean(-1, keepdim=True))
        for b in (*stream.blocks, _Block(None, stream.beta[None]))
    )
    base = stream.base - stream.base.mean(-1, keepdim=True)
    # Row variance · C = a²|B|² + 2a R·(W B) + R (W Wᵀ) Rᵀ, with B and W centred.
    base_sq = (base * base).sum(-1)  # (N,)
    cross = _cross_term(blocks, coeff, base, norm, shared)  # (P, N): Σ_r R[n, r] (W[r] · B[n])
    quad = (torch.bmm(vectors @ vectors.transpose(1, 2), coeff) * coeff).sum(1)
    if stream.scale is None:
        sq = quad + 2 * cross + base_sq
    else:
        sq = quad + 2 * stream.scale * cross + stream.scale**2 * base_sq
    inv = torch.rsqrt(sq.clamp(min=0) / channels + norm.eps)  # (P, N)
    return _Stream(
        base * norm.weight,
        inv if stream.scale is None else stream.scale * inv,
        coeff * inv[:, None, :],
        vectors * norm.weight,
        norm.bias,
        tuple(_Block(b.coords, b.basis * norm.weight) for b in blocks),
    )


def _cross_term(
    blocks: tuple[_Block, ...],
    coeff: torch.Tensor,
    base: torch.Tensor,
    norm: nn.Module,
    shared: _Shared,
) -> torch.Tensor:
    """Σ_r coeff[p, r, n] (W[p, r] · base[n]) block by block: a head's rows through its basis
    projected onto the image once (N, H, d), so each prompt pays d, not C, per row and pixel."""
    total = coeff.new_zeros(coeff.shape[0], coeff.shape[2])
    start = 0
    for index, block in enumerate(blocks):
        part = coeff[:, start : start + block.rows]
        if block.coords is None:
            total = total + (part * (block.basis @ base.T)).sum(1)
        else:
            n_prompts, n_tokens, heads, _ = block.coords.shape
            projected = shared.product(
                norm,
                f"basis{index}",
                lambda basis=block.basis: torch.einsum("hdc,nc->nhd", basis, base),
            )
            dots = torch.einsum("pthd,nhd->pthn", block.coords, projected)
            total = total + (part.view(n_prompts, n_tokens, heads, -1) * dots).sum((1, 2))
        start += block.rows
    return total


def predict_iou(
    decoder: nn.Module,
    image_embedding: torch.Tensor,
    image_pe: torch.Tensor,
    sparse_prompt_embeddings: torch.Tensor,
    no_mask_embedding: torch.Tensor,
    multimask_output: bool,
    chunk: int | None = None,
) -> torch.Tensor:
    """Predicted IoU (P, M) of the stock ``MaskDecoder.forward``, without masks.

    Arguments as for ``sugfw.models.decoder.decode_prompts_on_one_image``; ``chunk`` prompts at
    a time (all at once when None). On a CPU small chunks keep each prompt's (rank × h·w)
    coefficients in cache (32 measured fastest on 2 cores); the image's own projections are
    made once for all chunks.
    """
    shared = _Shared()
    n_prompts = sparse_prompt_embeddings.shape[0]
    step = chunk or max(n_prompts, 1)
    return torch.cat(
        [
            _predict_iou_chunk(
                decoder,
                image_embedding,
                image_pe,
                part,
                no_mask_embedding,
                multimask_output,
                shared,
            )
            for part in sparse_prompt_embeddings.split(step)
        ]
    )


def _predict_iou_chunk(
    decoder: nn.Module,
    image_embedding: torch.Tensor,
    image_pe: torch.Tensor,
    sparse_prompt_embeddings: torch.Tensor,
    no_mask_embedding: torch.Tensor,
    multimask_output: bool,
    shared: _Shared,
) -> torch.Tensor:
    transformer = decoder.transformer
    n_prompts = sparse_prompt_embeddings.shape[0]
    output_tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], dim=0)
    point_embedding = torch.cat(
        (output_tokens.unsqueeze(0).expand(n_prompts, -1, -1), sparse_prompt_embeddings), dim=1
    )
    src = image_embedding + no_mask_embedding
    base = src.flatten(2)[0].T  # (N, C)
    pe = image_pe.flatten(2)[0].T
    channels = base.shape[-1]
    stream = _Stream(base, None, None, base.new_zeros(1, 0, channels), base.new_zeros(channels))

    queries = point_embedding
    for layer in transformer.layers:
        if layer.skip_first_layer_pe:
            queries = layer.self_attn(q=queries, k=queries, v=queries)
        else:
            q = queries + point_embedding
            queries = queries + layer.self_attn(q=q, k=q, v=queries)
        queries = layer.norm1(queries)
        attn_out = _token_to_stream(
            layer.cross_attn_token_to_image, queries + point_embedding, stream, pe, shared
        )
        queries = layer.norm2(queries + attn_out)
        queries = layer.norm3(queries + layer.mlp(queries))
        stream = _stream_to_token(
            layer.cross_attn_image_to_token,
            stream,
            pe,
            queries + point_embedding,
            queries,
            shared,
        )
        stream = _layer_norm(layer.norm4, stream, shared)
    attn_out = _token_to_stream(
        transformer.final_attn_token_to_image, queries + point_embedding, stream, pe, shared
    )
    queries = transformer.norm_final_attn(queries + attn_out)

    iou_pred = decoder.iou_prediction_head(queries[:, 0, :])
    return iou_pred[:, 1:] if multimask_output else iou_pred[:, :1]


class FactoredIoU(nn.Module):
    """``predict_iou`` on one chunk of prompts as a module, for export to a CPU runtime
    (``sugfw.models.runtime``); arguments in the order the runtime's chunking expects, then the
    image's products made by ``ImageProducts`` (so no chunk makes them again)."""

    def __init__(self, decoder: nn.Module, multimask_output: bool) -> None:
        super().__init__()
        self.decoder = decoder
        self.multimask_output = multimask_output

    def forward(
        self,
        image_embedding: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        no_mask_embedding: torch.Tensor,
        *products: torch.Tensor,
    ) -> torch.Tensor:
        return self._pass(
            image_embedding,
            sparse_prompt_embeddings,
            image_pe,
            no_mask_embedding,
            _Shared(products),
        )

    def _pass(
        self,
        image_embedding: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        no_mask_embedding: torch.Tensor,
        shared: _Shared,
    ) -> torch.Tensor:
        return _predict_iou_chunk(
            self.decoder,
            image_embedding,
            image_pe,
            sparse_prompt_embeddings,
            no_mask_embedding,
            self.multimask_output,
            shared,
        )


class ImageProducts(FactoredIoU):
    """The image's products with the decoder's weights (``_Shared``), in the order a pass makes
    them: one prompt goes through the pass so that the order is the pass's own; its IoU is
    dropped."""

    def forward(
        self,
        image_embedding: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        no_mask_embedding: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        shared = _Shared()
        self._pass(
            image_embedding, sparse_prompt_embeddings[:1], image_pe, no_mask_embedding, shared
        )
        return tuple(shared.made)
