"""Scoring: slice → SliceRecord (union mask, uncertainty map, PGDR feature, Û).

For one slice: scale intensities to [0, 1], draw K augmentations from a seed derived from the
slice's content, encode the original and its K copies as one batch, run everything mode on each,
undo each copy's spatial transform on its union mask, average (M̄), form U (Eq. 3), and pool the
original's patch features with U (Eq. 4–5). The original's largest kept masks also go into the
record one by one (the pre-annotation's regions); they change no score. Records are cached by
content + settings.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from sugfw.augment import (
    AUGMENTATION_LAWS,
    IDENTITY,
    AugmentationLaw,
    AugmentationParams,
    augment,
    invert_spatial,
    sample_augmentations,
)
from sugfw.cache import RecordCache
from sugfw.content import central_brightness
from sugfw.data import validate_slice
from sugfw.everything import EverythingSettings, everything_union
from sugfw.intensity import scale_intensities
from sugfw.models.base import CanvasGeometry, SegmenterModel, transform_prompts
from sugfw.records import REGION_CAP, SliceRecord, content_hash, pack_regions, slice_seed
from sugfw.uncertainty import GridAlignment, UncertaintySign, mean_mask, pgdr, uncertainty_map

log = logging.getLogger(__name__)
# Bump when a change alters records, so old cache entries are not reused. 2: the authors'
# augmentation law by default; every view prompted with the original grid mapped onto it.
SCORING_VERSION = 2


@dataclass(frozen=True)
class ScoringSettings:
    """Everything that changes a record (and so keys the cache)."""

    everything: EverythingSettings
    k: int = 10
    seed: int = 0
    uncertainty_sign: UncertaintySign = "code"
    alignment: GridAlignment = "content"
    intensity_percentiles: tuple[float, float] = (0.5, 99.5)
    precision: str = "fp32"
    """"fp32" or "bf16" (autocast of encoder and decoder)."""
    augmentation_law: AugmentationLaw = "authors"
    """"authors": every op on every view, never the identity (the authors' code); "sparse": each
    op skipped part of the time (``sugfw.augment.sample_augmentations``)."""
    view_prompts: str = "mapped"
    """"mapped": every view is prompted with view 0's grid mapped through its own flip/rotation,
    so U measures the model, not the grid's layout; "native": each view's own grid."""

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"k={self.k}: need at least one augmentation")
        if self.precision not in ("fp32", "bf16"):
            raise ValueError(f"precision={self.precision!r}: use 'fp32' or 'bf16'")
        if self.augmentation_law not in AUGMENTATION_LAWS:
            raise ValueError(
                f"augmentation_law={self.augmentation_law!r}: use one of {AUGMENTATION_LAWS}"
            )
        if self.view_prompts not in ("mapped", "native"):
            raise ValueError(f"view_prompts={self.view_prompts!r}: use 'mapped' or 'native'")
        low, high = self.intensity_percentiles
        if not 0 <= low < high <= 100:
            raise ValueError(
                f"intensity_percentiles={self.intensity_percentiles}: need 0 <= low < high <= 100"
            )


@dataclass(frozen=True)
class Batching:
    """How work is split on the device; does not change records."""

    encoder_batch_size: int
    prompt_batch_size: int

    @classmethod
    def for_device(cls, device: torch.device, k: int) -> Batching:
        # On a GPU the original and its K copies go through the encoder together and ~1k prompts
        # per decoder call fit easily. On a CPU batching buys no throughput: one image per encoder
        # call (ViT-B's global attention needs ~1 GB per 1024² image) and 64 prompts per decoder
        # call (measured faster than 16 or 256 on 2 cores). With the IoU filter on, a call first
        # predicts IoU for all its prompts in factored form (~2 MB per prompt, plus ~0.1 s of
        # shared projections per call), so 128 covers LiteMedSAM's 56-71 boxes in one call; the
        # prompts that pass are decoded in full 64 at a time (``sugfw.models.decoder``).
        if device.type == "cuda":
            return cls(encoder_batch_size=k + 1, prompt_batch_size=1024)
        return cls(encoder_batch_size=1, prompt_batch_size=128)


@dataclass
class AugmentedViews:
    """The original slice (view 0) and its K augmented copies, with where each sits on the
    canvas."""

    params: list[AugmentationParams]
    images: list[torch.Tensor]
    geometry: list[CanvasGeometry]
    feature_geometry: CanvasGeometry
    extra: list[torch.Tensor] = field(default_factory=list)
    prompts: list[torch.Tensor] = field(default_factory=list)
    """Everything-mode prompts of each view, in that view's canvas pixels."""


def build_views(
    image: np.ndarray, settings: ScoringSettings, model: SegmenterModel
) -> tuple[str, AugmentedViews]:
    """Scale, hash and augment one slice (shared by the fast and the plain path)."""
    image = validate_slice(image, "slice")
    image_hash = content_hash(image)
    scaled = torch.from_numpy(scale_intensities(image, settings.intensity_percentiles)).to(
        model.device
    )
    params = [IDENTITY]
    seed = slice_seed(settings.seed, image_hash)
    params += sample_augmentations(settings.k, seed, settings.augmentation_law)
    images = [scaled] + [augment(scaled, p) for p in params[1:]]
    geometry = [CanvasGeometry.fit(*img.shape, model.canvas_size) for img in images]
    prompts = _view_prompts(model, settings, params, geometry)
    feature_geometry = geometry[0]
    extra = []
    if settings.alignment == "authors":
        # The authors encode the slice placed on the canvas without resizing (see uncertainty.py).
        feature_geometry = CanvasGeometry.fit(*image.shape, model.canvas_size, resize=False)
        extra = [scaled]
    return image_hash, AugmentedViews(params, images, geometry, feature_geometry, extra, prompts)


def _view_prompts(
    model: SegmenterModel,
    settings: ScoringSettings,
    params: list[AugmentationParams],
    geometry: list[CanvasGeometry],
) -> list[torch.Tensor]:
    grid, kind = settings.everything.grid, settings.everything.prompt_kind
    if settings.view_prompts == "native":
        return [model.prompt_grid(geo, grid, kind) for geo in geometry]
    base = model.prompt_grid(geometry[0], grid, kind)
    height, width = geometry[0].content_height, geometry[0].content_width
    return [base] + [
        transform_prompts(base, height, width, p.flip_axis, p.rot90) for p in params[1:]
    ]


def finish_record(
    slice_id: str,
    image_hash: str,
    views: AugmentedViews,
    unions: list[torch.Tensor],
    kept: int,
    features: torch.Tensor,
    settings: ScoringSettings,
    regions: torch.Tensor | None = None,
) -> SliceRecord:
    """Register the augmented unions back, form U, pool the features: the record (Eq. 3–5).

    ``regions``: view 0's largest kept masks, (M <= ``REGION_CAP``, H, W) bool, largest first;
    without them the record holds the union as its single region.
    """
    registered = torch.stack([invert_spatial(u, p) for u, p in zip(unions[1:], views.params[1:])])
    u_map = uncertainty_map(mean_mask(registered), settings.uncertainty_sign)
    f_pgdr, f_mean, u_scalar = pgdr(
        features.float(), u_map, views.feature_geometry, settings.alignment
    )
    return SliceRecord(
        slice_id=slice_id,
        content_hash=image_hash,
        features_pgdr=f_pgdr.cpu().numpy().astype(np.float32),
        features_mean=f_mean.cpu().numpy().astype(np.float32),
        uncertainty=float(u_scalar),
        union_mask=unions[0].cpu().numpy().astype(bool),
        uncertainty_map=u_map.cpu().numpy().astype(np.float16),
        masks_kept=kept,
        region_bits=None if regions is None else pack_regions(regions.cpu().numpy()),
    )


def autocast(model: SegmenterModel, precision: str) -> contextlib.AbstractContextManager:
    if precision == "bf16":
        return torch.autocast(model.device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


class Scorer:
    """Batched scoring on the model's device, with an optional on-disk cache."""

    def __init__(
        self,
        model: SegmenterModel,
        settings: ScoringSettings,
        cache_dir: Path | None = None,
        batching: Batching | None = None,
    ) -> None:
        self.model = model
        self.settings = settings
        self.batching = batching or Batching.for_device(model.device, settings.k)
        self.cache = RecordCache(cache_dir, self.identity()) if cache_dir is not None else None

    def identity(self) -> dict:
        """What the cache is keyed on besides the pixels: model, weights, settings, code version,
        and the model's runtime when it is not torch (records then differ by rounding; torch's
        key is unchanged, so its cached records stay valid)."""
        identity = {
            "model": self.model.name,
            "checkpoint": self.model.checkpoint_id,
            "version": SCORING_VERSION,
            **asdict(self.settings),
        }
        runtime = getattr(self.model, "runtime", "torch")
        if runtime != "torch":
            identity["runtime"] = runtime
        return identity

    def score_image(self, image: np.ndarray, slice_id: str = "") -> SliceRecord:
        image = validate_slice(image, slice_id or "slice")
        record = self.cache.get(content_hash(image), image) if self.cache is not None else None
        if record is not None:
            record.slice_id = slice_id
        else:
            record = self._compute(image, slice_id)
            record.content = central_brightness(image)
            if self.cache is not None:
                self.cache.put(record)
        return record

    def _compute(self, image: np.ndarray, slice_id: str) -> SliceRecord:
        return self.score_detailed(image, slice_id)[0]

    @torch.inference_mode()
    def score_detailed(
        self, image: np.ndarray, slice_id: str = ""
    ) -> tuple[SliceRecord, list[np.ndarray]]:
        """Score without the cache; also return every view's union mask in the view's own frame."""
        model, settings = self.model, self.settings
        image_hash, views = build_views(image, settings, model)
        canvases = views.images + views.extra
        geometry = views.geometry + ([views.feature_geometry] if views.extra else [])
        step = self.batching.encoder_batch_size
        with autocast(model, settings.precision):
            embeddings = torch.cat(
                [
                    model.encode(model.prepare(canvases[i : i + step], geometry[i : i + step]))
                    for i in range(0, len(canvases), step)
                ]
            )
            results = [
                everything_union(
                    model,
                    embeddings[i : i + 1],
                    views.geometry[i],
                    settings.everything,
                    self.batching.prompt_batch_size,
                    prompts=views.prompts[i],
                    regions=REGION_CAP if i == 0 else 0,  # the pre-annotation's, view 0 only
                )
                for i in range(len(views.images))
            ]
        features = embeddings[-1] if views.extra else embeddings[0]
        unions = [r.union for r in results]
        record = finish_record(
            slice_id,
            image_hash,
            views,
            unions,
            results[0].kept,
            features,
            settings,
            regions=results[0].regions,
        )
        return record, [u.cpu().numpy() for u in unions]
