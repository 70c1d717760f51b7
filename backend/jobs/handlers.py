"""Which handler runs each kind of background job."""

from __future__ import annotations

from backend.config import BackendConfig
from backend.jobs.queue import JobHandler
from backend.jobs.score_job import ScoreJob
from backend.jobs.slice_scorer import SliceScorer
from backend.jobs.training_job import TrainJob
from backend.model import SugfwModel


def job_handlers(config: BackendConfig, model: SugfwModel) -> dict[str, JobHandler]:
    """Handlers sharing the model's scorer (one model in memory) and prediction store."""
    scorer = model.scorer if model.scorer is not None else SliceScorer(config)
    return {
        "score": ScoreJob(config, scorer, model.predictions),
        "train": TrainJob(config, model.predictions),
    }
