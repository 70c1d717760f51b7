"""The library's Scorer as the backend uses it: built once from the config, shared, one slice at
a time.

The model is loaded on first use (not at import or app start), so ``/health`` answers while the
weights load. Scoring is serialised by a lock: the scoring job and an on-demand ``/predict`` share
one model, and two slices at once on the same device would only compete for it.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import TYPE_CHECKING, Any

import numpy as np

from backend.config import BackendConfig
from sugfw.pipeline import ScorerSpec
from sugfw.records import SliceRecord
from sugfw.scorer_options import ScoringOptions
from sugfw.settings import declared

if TYPE_CHECKING:
    from sugfw.scoring import Scorer

SCORE_CACHE_DIR = "scores"
"""Record cache under the state dir: a restart mid-job finds every slice it had scored."""


class SliceScorer:
    def __init__(self, config: BackendConfig, scorer: Scorer | None = None) -> None:
        self.config = config
        self._scorer = scorer
        self._lock = threading.Lock()

    @property
    def scorer(self) -> Scorer:
        """The library ``Scorer`` (built on first access)."""
        with self._lock:
            if self._scorer is None:
                self._scorer = build_scorer(self.config)
            return self._scorer

    def identity(self) -> dict[str, Any]:
        """What the records depend on besides the pixels (model, weights, settings)."""
        return self.scorer.identity()

    def cached(self, image_hash: str, slice_id: str) -> SliceRecord | None:
        """The cached record of the slice with content hash ``image_hash``, without its pixels."""
        cache = self.scorer.cache
        record = cache.get(image_hash) if cache is not None else None
        return None if record is None else dataclasses.replace(record, slice_id=slice_id)

    def score(self, image: np.ndarray, slice_id: str) -> SliceRecord:
        """The record of one slice, from the cache when it was scored before."""
        scorer = self.scorer
        with self._lock:
            return scorer.score_image(image, slice_id)


def scorer_spec(config: BackendConfig) -> ScorerSpec:
    """The configured scoring settings as a ``ScorerSpec`` (also what Ray workers build)."""
    return ScorerSpec(**{name: getattr(config, name) for name, _, _ in declared(ScoringOptions)})


def build_scorer(config: BackendConfig) -> Scorer:
    """A library ``Scorer`` for the configured settings, caching under the state dir."""
    return scorer_spec(config).build(config.state_dir / SCORE_CACHE_DIR)
