"""From settings to records: the one way to build a ``Scorer`` and the one scoring loop.

``ScorerSpec`` is a small, picklable description of a scorer (model, weights, every setting that
changes a record, and how work is batched); the CLI, the benchmark runner, the backend and remote
workers all build their scorer from one. ``score_to_index`` runs a stream of slices through a
scorer and assembles the ``RecordIndex`` that selection reads.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
from tqdm.auto import tqdm

from sugfw.records import RecordIndex, SliceRecord
from sugfw.scorer_options import ScoringOptions

if TYPE_CHECKING:
    from sugfw.data import Slice
    from sugfw.scoring import Scorer


class RecordScorer(Protocol):
    """What the scoring loop needs of a scorer (``sugfw.scoring.Scorer`` is one)."""

    def score_image(self, image: np.ndarray, slice_id: str = "") -> SliceRecord: ...


@dataclass(frozen=True)
class ScorerSpec(ScoringOptions):
    """Everything needed to build a scorer: the declared scoring settings
    (``sugfw.scorer_options``), plus untrained weights for tests and benchmarks."""

    random_weights: bool = False

    def build(self, cache_dir: Path | None = None) -> Scorer:
        """Load the model on its device and wrap it in a ``Scorer`` caching under ``cache_dir``."""
        from sugfw.everything import EverythingSettings
        from sugfw.models import build_model
        from sugfw.scoring import Batching, Scorer, ScoringSettings

        model = build_model(
            self.model,
            checkpoint=self.checkpoint,
            device=self.device,
            random_weights=self.random_weights,
        )
        model.use_runtime(self.runtime, self.precision)
        everything = EverythingSettings.for_model(
            model,
            grid=tuple(self.grid) if self.grid else None,
            pred_iou_thresh=self.pred_iou_thresh,
            stability_thresh=self.stability_thresh,
            max_area_fraction=self.max_area_fraction,
            box_nms_thresh=self.box_nms_thresh,
        )
        settings = ScoringSettings(
            everything=everything,
            k=self.k,
            seed=self.seed,
            uncertainty_sign=self.uncertainty_sign,  # type: ignore[arg-type]
            alignment=self.alignment,  # type: ignore[arg-type]
            precision=self.precision,
        )
        default = Batching.for_device(model.device, self.k)
        batching = Batching(
            self.encoder_batch or default.encoder_batch_size,
            self.prompt_batch or default.prompt_batch_size,
        )
        return Scorer(model, settings, cache_dir=cache_dir, batching=batching)


def score_stream(
    scorer: RecordScorer,
    slices: Iterable[Slice],
    progress: bool = True,
    total: int | None = None,
    keep_maps: bool = False,
) -> Iterator[tuple[Slice, SliceRecord]]:
    """Score each slice (from the scorer's cache when it has it), lazily, in input order.

    Without ``keep_maps`` the union mask and the uncertainty map are dropped from each record:
    selection needs the vectors and scalars only, and the maps stay in the cache.
    """
    for item in tqdm(slices, total=total, disable=not progress, desc="scoring", unit="slice"):
        record = scorer.score_image(item.image, item.slice_id)
        if not keep_maps:
            record.union_mask = record.uncertainty_map = None  # type: ignore[assignment]
        yield item, record


def index_from_scored(scored: Iterable[tuple[Slice, SliceRecord]]) -> RecordIndex:
    """The ``RecordIndex`` of (slice, record) pairs, in their order."""
    records, case_ids, slice_indices = [], [], []
    for item, record in scored:
        records.append(record)
        case_ids.append(item.case_id)
        slice_indices.append(item.slice_index)
    return RecordIndex.from_records(records, case_ids, slice_indices)


def score_to_index(
    scorer: RecordScorer, slices: Iterable[Slice], progress: bool = True, total: int | None = None
) -> RecordIndex:
    """Score every slice and assemble the ``RecordIndex`` that selection reads."""
    return index_from_scored(score_stream(scorer, slices, progress, total))
