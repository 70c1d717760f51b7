"""Interactive mode: a box (or points) drawn in the labelling page → the model's mask for it.

Label Studio posts the drawn regions to ``/predict`` (``backend.labelstudio.prompts`` reads them);
the answer is one brush region of the config's brush control, under the box's label when the brush
control has it, drawn by ``sugfw.prompting.PromptSegmenter`` over the backend's loaded scoring
model. A prompt that cannot be used on the task's image is an empty prediction and a log line that
names the problem, never the context.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from backend.labelstudio.brush import SegmentationControl, mask_to_result, parse_label_config
from backend.labelstudio.prefill import prefill_prediction
from backend.labelstudio.prompts import parse_prompt
from sugfw.errors import SugfwError
from sugfw.prompting import DEFAULT_CACHE_SLICES, EmbeddingCache, PromptSegmenter

if TYPE_CHECKING:
    from backend.jobs.slice_scorer import SliceScorer
    from backend.labelstudio.images import ImageFetcher

log = logging.getLogger(__name__)


class InteractivePredictor:
    """Answers an interactive /predict for one task, with the backend's loaded scoring model."""

    def __init__(self, scorer: SliceScorer, cache_slices: int = DEFAULT_CACHE_SLICES) -> None:
        self.slice_scorer = scorer
        self.cache = EmbeddingCache(cache_slices)
        self._segmenter: PromptSegmenter | None = None
        self._lock = threading.Lock()

    @property
    def segmenter(self) -> PromptSegmenter:
        """Built on first use over the scorer's own model (loaded once, shared with scoring)."""
        with self._lock:
            if self._segmenter is None:
                library = self.slice_scorer.scorer  # the library Scorer inside
                self._segmenter = PromptSegmenter(
                    library.model, library.settings.intensity_percentiles, self.cache
                )
            return self._segmenter

    def predict(
        self,
        task: Mapping[str, Any],
        regions: Sequence[Any],
        label_config: str,
        fetcher: Callable[[], ImageFetcher],
        model_version: str,
    ) -> dict[str, Any] | None:
        """The brush prediction for the prompt ``regions`` draw on ``task``'s image, or None when
        there is nothing usable (logged). A config without a brush tag raises LabelConfigError."""
        control = parse_label_config(label_config)
        task_id = task.get("id")
        try:
            # Built here, inside the try: an expired key is refused when the fetcher is made.
            image_fetcher = fetcher()
        except SugfwError as error:
            log.warning("interactive prompt on task %s: no image: %s", task_id, error)
            return None
        try:
            image = image_fetcher.fetch(task, control.image_key)
        except SugfwError as error:
            log.warning("interactive prompt on task %s: no image: %s", task_id, error)
            return None
        finally:
            image_fetcher.close()
        try:
            prompt = parse_prompt(regions, *np.shape(image)[:2])
            mask = self.segmenter.mask(image, prompt)
        except SugfwError as error:  # a PromptError, or a slice the model cannot take
            log.warning("interactive prompt on task %s refused: %s", task_id, error)
            return None
        result = mask_to_result(mask, control, brush_label(control, prompt.label))
        for item in result:
            item["id"] = uuid.uuid4().hex[:10]  # Label Studio keys regions by id
        return prefill_prediction(result, model_version, None)


def brush_label(control: SegmentationControl, label: str | None) -> str:
    """``label`` when the brush control has it, else the brush control's first label."""
    return label if label in control.labels else control.labels[0]
