"""One small interface for SAM-family models.

Every model encodes a batch of prepared canvases into a 256 × 64 × 64 patch embedding and decodes
a batch of prompts (points or boxes, in canvas pixels) into low-resolution mask logits plus the
model's own predicted IoU. Everything mode, uncertainty and pooling are written once against this
interface, so SAM ViT-B/L/H and LiteMedSAM share them.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from sugfw.models.decoder import (
    RUNTIME_IOU_CHUNKS,
    decode_passing_prompts,
    decode_prompts_on_one_image,
)
from sugfw.models.iou_first import FactoredIoU, ImageProducts
from sugfw.models.runtime import (
    Graph,
    Runner,
    choose_runtime,
    export_key,
    in_chunks,
    load_runner,
    runtime_version,
)

PromptKind = Literal["points", "boxes"]


@dataclass(frozen=True)
class EverythingSettings:
    """Everything-mode settings; each model carries its defaults (``sugfw.everything`` says what
    each one filters)."""

    prompt_kind: PromptKind
    grid: tuple[int, ...]
    """Points: points per side. Boxes: box side lengths in canvas pixels (stride = half a side)."""
    pred_iou_thresh: float
    stability_thresh: float
    max_area_fraction: float
    box_nms_thresh: float
    multimask: bool

    @classmethod
    def for_model(cls, model: SegmenterModel, **overrides: object) -> EverythingSettings:
        """The model's defaults with ``overrides`` (keys with value ``None`` are ignored)."""
        return replace(model.defaults, **{k: v for k, v in overrides.items() if v is not None})


@dataclass(frozen=True)
class CanvasGeometry:
    """Where a slice of ``height`` × ``width`` pixels sits on the square encoder canvas."""

    height: int
    width: int
    canvas: int
    scale: float

    @property
    def content_height(self) -> int:
        return int(self.height * self.scale + 0.5)  # SAM's ResizeLongestSide rounding

    @property
    def content_width(self) -> int:
        return int(self.width * self.scale + 0.5)

    @classmethod
    def fit(cls, height: int, width: int, canvas: int, resize: bool = True) -> CanvasGeometry:
        """Resize the longest side to the canvas (SAM's rule); ``resize=False`` keeps the slice's
        own pixel size (the authors' placement), shrinking only what would not fit."""
        longest = max(height, width)
        scale = canvas / longest if resize or longest > canvas else 1.0
        return cls(height, width, canvas, scale)


class SegmenterModel(ABC):
    """A SAM-family model: image encoder, prompt encoder, mask decoder."""

    name: str
    canvas_size: int
    grid_size: int = 64
    mask_threshold: float = 0.0
    quantise_8bit: bool = False
    """Round the input to 8-bit grey levels before and after resizing, as SAM's own predictor
    does with its uint8 images (keeps this path's masks identical to SAM's generator)."""
    defaults: EverythingSettings
    runtime_measured: bool = False
    """Whether ``use_runtime("auto")`` moves the model to a CPU runtime: only where one was
    measured faster and within tolerance (LiteMedSAM); SAM's ViTs stay in torch unless asked."""
    prompt_kinds: tuple[PromptKind, ...] = ("points", "boxes")
    """Interactive prompts the model was trained for (LiteMedSAM: boxes only)."""

    def __init__(self, net: nn.Module, device: torch.device, checkpoint_id: str) -> None:
        self.net = net.to(device).eval()
        self.device = device
        self.checkpoint_id = checkpoint_id
        """Identity of the weights (a SHA-256, or a one-off id for random weights), for cache
        keys."""
        self.runtime = "torch"
        """What runs the encoder and the factored IoU pass (``use_runtime``), with its version;
        records computed on a runtime other than torch differ by rounding, so the record cache
        keys on it."""
        self._runners: dict[str, Runner] = {}

    @property
    def image_encoder(self) -> nn.Module:
        return self.net.image_encoder

    @property
    def prompt_encoder(self) -> nn.Module:
        return self.net.prompt_encoder

    @property
    def mask_decoder(self) -> nn.Module:
        return self.net.mask_decoder

    @abstractmethod
    def normalise(self, canvas: torch.Tensor) -> torch.Tensor:
        """Map canvases of grey values in [0, 1], shape (B, 3, S, S), to the encoder's input."""

    def prepare(self, images: list[torch.Tensor], geometry: list[CanvasGeometry]) -> torch.Tensor:
        """Grey slices in [0, 1] → one (B, 3, S, S) batch: resized, padded bottom-right,
        normalised."""
        canvases = []
        for image, geo in zip(images, geometry):
            resized = self._quantise(image[None, None].to(self.device, torch.float32))
            size = (geo.content_height, geo.content_width)
            if size != tuple(image.shape):
                resized = F.interpolate(
                    resized, size=size, mode="bilinear", align_corners=False, antialias=True
                )
                resized = self._quantise(resized)
            pad = (0, self.canvas_size - size[1], 0, self.canvas_size - size[0])
            canvases.append(F.pad(resized, pad))
        batch = torch.cat(canvases).clamp_(0, 1).expand(-1, 3, -1, -1)
        # Pad with zeros *after* normalising, as SAM does: the padding is "no image", not black.
        normalised = self.normalise(batch)
        content = torch.zeros_like(normalised[:, :1], dtype=torch.bool)
        for i, geo in enumerate(geometry):
            content[i, :, : geo.content_height, : geo.content_width] = True
        return normalised * content

    def _quantise(self, x: torch.Tensor) -> torch.Tensor:
        return torch.round(x.clamp(0, 1) * 255) / 255 if self.quantise_8bit else x

    def use_runtime(self, requested: str = "auto", precision: str = "fp32") -> str:
        """Run the image encoder and the factored IoU pass on ``requested``
        (``sugfw.models.runtime``): exported and loaded now, so the first slice is not slowed.
        Returns the runtime in use ("torch" on a GPU, under bf16, or when the runtime is missing
        or fails, logged)."""
        random_weights = self.checkpoint_id.startswith("random-")
        if requested == "auto" and (not self.runtime_measured or random_weights):
            requested = "torch"  # the reference path where no runtime was measured faster
        runtime = choose_runtime(requested, self.device, precision)
        self._runners = {}
        for graph in self.runtime_graphs() if runtime != "torch" else []:
            # Random weights are never seen twice: exported to a temporary file, not the cache.
            key = None
            if not random_weights:
                key = export_key(self.name, self.checkpoint_id, graph.name, graph.code_digest())
            runner = load_runner(graph, runtime, key)
            if runner is not None:
                self._runners[graph.name] = runner
        if not self._runners:
            runtime = "torch"
        self.runtime = runtime_version(runtime) if runtime != "torch" else "torch"
        return runtime

    @torch.no_grad()
    def runtime_graphs(self) -> list[Graph]:
        """The stages a runtime takes over, with static example inputs: the encoder on one
        canvas, and the factored IoU pass: the image's products once per image, then each of
        ``RUNTIME_IOU_CHUNKS`` two-token prompts (boxes, or a point and its padding) of the
        everything-mode default."""
        canvas = torch.zeros(1, 3, self.canvas_size, self.canvas_size)
        channels = self.prompt_encoder.embed_dim
        # Distinct tensors: an exporter may take one tensor passed twice for one input.
        grid = (1, channels, *self.prompt_encoder.image_embedding_size)
        images = [torch.zeros(grid) for _ in range(3)]  # embedding, pe, no-mask embedding
        multimask = self.defaults.multimask
        image_products = ImageProducts(self.mask_decoder, multimask)
        example = (images[0], torch.zeros(1, 2, channels), images[1], images[2])
        # Distinct example products too, for the same reason.
        products = tuple(p.clone() + i for i, p in enumerate(image_products(*example)))
        iou = FactoredIoU(self.mask_decoder, multimask)
        return [
            Graph("encoder", self.image_encoder, (canvas,), dynamo=False),
            Graph("iou_image", image_products, example, dynamo=True),
        ] + [
            Graph(
                f"iou{size}",
                iou,
                (images[0], torch.zeros(size, 2, channels), images[1], images[2], *products),
                dynamo=True,
            )
            for size in RUNTIME_IOU_CHUNKS
        ]

    def _runner(self, name: str, device: torch.device) -> Runner | None:
        """The runtime's stage, where it applies: CPU tensors, no autocast."""
        if device.type != "cpu" or torch.is_autocast_enabled("cpu"):
            return None
        return self._runners.get(name)

    def _runtime_iou_pass(self, device: torch.device) -> Callable[..., torch.Tensor] | None:
        """The runtime's factored IoU pass, or None where a stage stays in torch: the image's
        products once, then the prompts chunk by chunk."""
        image = self._runner("iou_image", device)
        runners = {size: self._runner(f"iou{size}", device) for size in RUNTIME_IOU_CHUNKS}
        if image is None or any(runner is None for runner in runners.values()):
            return None
        chunks = in_chunks(runners)

        def iou_pass(embedding, sparse, pe, no_mask) -> torch.Tensor:
            products = image(embedding, sparse[:1], pe, no_mask)
            return chunks(embedding, sparse, pe, no_mask, *products)

        return iou_pass

    @torch.inference_mode()
    def encode(self, batch: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) prepared canvases → (B, 256, 64, 64) patch embeddings."""
        runner = self._runner("encoder", batch.device)
        if runner is None:
            return self.image_encoder(batch)
        # The exported encoder takes one canvas at a time (static batch).
        return torch.cat([runner(canvas[None].float().contiguous())[0] for canvas in batch])

    @torch.inference_mode()
    def decode(
        self,
        embedding: torch.Tensor,
        prompts: torch.Tensor,
        multimask: bool,
        share_image: bool = True,
        iou_thresh: float = 0.0,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode P prompts on one image embedding (1, 256, 64, 64).

        ``prompts`` is (P, 2) points or (P, 4) xyxy boxes in canvas pixels. Returns low-resolution
        logits (P, M, 256, 256) and predicted IoU (P, M), M = 3 with ``multimask`` else 1.
        ``share_image=False`` runs the stock decoder, which copies the image once per prompt
        (``sugfw.models.decoder`` says why the shared form gives the same result).

        ``iou_thresh > 0`` (shared form only) returns only the prompts with at least one mask of
        predicted IoU above it, in order, and upscales no other prompt's masks; the rows returned
        equal the full decoder's. Everything mode's IoU filter then gives the same masks.
        """
        prompts = prompts.to(self.device, torch.float32)
        if prompts.shape[-1] == 2:
            labels = torch.ones(prompts.shape[0], 1, dtype=torch.int, device=self.device)
            sparse, dense = self.prompt_encoder(
                points=(prompts[:, None, :], labels), boxes=None, masks=None
            )
        else:
            sparse, dense = self.prompt_encoder(points=None, boxes=prompts, masks=None)
        image_pe = self.prompt_encoder.get_dense_pe()
        if share_image and iou_thresh > 0:
            iou_pass = None
            if sparse.shape[1] == 2 and multimask == self.defaults.multimask:
                iou_pass = self._runtime_iou_pass(embedding.device)
            return decode_passing_prompts(
                self.mask_decoder,
                embedding,
                image_pe,
                sparse,
                dense[:1],
                multimask,
                iou_thresh,
                iou_pass=iou_pass,
            )
        if share_image:
            # Without a mask prompt the dense embedding is the same "no mask" vector for every
            # prompt.
            return decode_prompts_on_one_image(
                self.mask_decoder, embedding, image_pe, sparse, dense[:1], multimask
            )
        return self.mask_decoder(
            image_embeddings=embedding,
            image_pe=image_pe,
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask,
        )

    @torch.inference_mode()
    def decode_prompt(
        self,
        embedding: torch.Tensor,
        box: torch.Tensor | None = None,
        points: torch.Tensor | None = None,
        point_labels: torch.Tensor | None = None,
        multimask: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode one interactive prompt on one image embedding (1, 256, 64, 64).

        ``box`` is one xyxy box (4,) and ``points`` (N, 2) xy points with ``point_labels`` (N,)
        (1 foreground, 0 background), all in canvas pixel indices; either or both. Unlike
        ``decode``, box and points are one prompt, as an annotator combines them. Returns
        low-resolution logits (M, 256, 256) and predicted IoU (M,), M = 3 with ``multimask``.
        """
        if box is None and points is None:
            raise ValueError("decode_prompt needs a box, points, or both")
        point_input = None
        if points is not None:
            coords = points.reshape(1, -1, 2).to(self.device, torch.float32)
            if point_labels is None:
                point_labels = torch.ones(coords.shape[1])
            labels = point_labels.reshape(1, -1).to(self.device, torch.int)
            point_input = (coords, labels)
        boxes = None if box is None else box.reshape(1, 4).to(self.device, torch.float32)
        sparse, dense = self.prompt_encoder(points=point_input, boxes=boxes, masks=None)
        logits, iou = self.mask_decoder(
            image_embeddings=embedding,
            image_pe=self.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask,
        )
        return logits[0], iou[0]

    def prompt_grid(
        self, geometry: CanvasGeometry, grid: tuple[int, ...], kind: PromptKind
    ) -> torch.Tensor:
        """Everything-mode prompts covering the slice's content area, in canvas pixels."""
        h, w = geometry.content_height, geometry.content_width
        if kind == "points":
            (n,) = grid
            # SAM's grid: cell centres of an n × n partition of the image.
            offsets = (torch.arange(n, dtype=torch.float64) + 0.5) / n
            ys, xs = torch.meshgrid(offsets * h, offsets * w, indexing="ij")
            # SAM maps original coordinates to the canvas with the resize factor; doing the same on
            # the content size keeps the grid identical to the stock generator's.
            return torch.stack([xs.flatten(), ys.flatten()], dim=1).float()
        boxes = []
        for side in grid:
            stride = max(side // 2, 1)
            for y0 in _starts(h, side, stride):
                for x0 in _starts(w, side, stride):
                    boxes.append([x0, y0, min(x0 + side, w), min(y0 + side, h)])
        return torch.tensor(boxes, dtype=torch.float32)


def _starts(length: int, side: int, stride: int) -> list[int]:
    """Window starts that tile ``length`` with windows of ``side`` at ``stride``, last one flush."""
    if side >= length:
        return [0]
    count = math.ceil((length - side) / stride) + 1
    return sorted({min(i * stride, length - side) for i in range(count)})


def transform_prompts(
    prompts: torch.Tensor, height: int, width: int, flip_axis: int | None, rot90: int
) -> torch.Tensor:
    """Map prompts given on a ``height`` × ``width`` content area through a flip, then ``rot90``
    counter-clockwise quarter turns (``sugfw.augment.apply_spatial``'s order and conventions).

    ``prompts`` is (P, 2) xy points or (P, 4) xyxy boxes in canvas pixels. Coordinates are pixel
    indices, as SAM's prompt encoder reads them (it adds half a pixel), so a flip maps x to
    ``width - 1 - x``: the mapped prompt covers exactly the mapped pixels, and an equivariant
    model segments the same anatomy in every view.
    """
    xy = prompts.reshape(-1, 2).double()
    x, y = xy[:, 0], xy[:, 1]
    if flip_axis == 0:
        y = (height - 1) - y
    elif flip_axis == 1:
        x = (width - 1) - x
    for _ in range(rot90 % 4):
        # torch.rot90 on (-2, -1): new[i, j] = old[j, w - 1 - i]; the content becomes w × h.
        x, y = y, (width - 1) - x
        height, width = width, height
    mapped = torch.stack([x, y], dim=1).reshape(prompts.shape)
    if prompts.shape[-1] == 4:
        # Corners may swap under a flip or rotation: keep xyxy with x0 <= x1, y0 <= y1.
        x0, x1 = (
            torch.minimum(mapped[:, 0], mapped[:, 2]),
            torch.maximum(mapped[:, 0], mapped[:, 2]),
        )
        y0, y1 = (
            torch.minimum(mapped[:, 1], mapped[:, 3]),
            torch.maximum(mapped[:, 1], mapped[:, 3]),
        )
        mapped = torch.stack([x0, y0, x1, y1], dim=1)
    return mapped.to(prompts.dtype)
