"""Which handler runs each kind of background job: the wiring of the jobs to the served model."""

from __future__ import annotations

from backend.config import BackendConfig
from backend.jobs.queue import JobHandler
from backend.jobs.score_job import ScoreJob
from backend.jobs.slice_scorer import SliceScorer
from backend.jobs.storage import PredictionStore
from backend.jobs.training_job import TrainJob


def job_handlers(
    config: BackendConfig, scorer: SliceScorer | None, predictions: PredictionStore
) -> dict[str, JobHandler]:
    """Handlers sharing ``scorer`` (one model in memory; a new one when None) and the prediction
    store that ``/predict`` answers from."""
    return {
        "score": ScoreJob(
            config, scorer if scorer is not None else SliceScorer(config), predictions
        ),
        "train": TrainJob(config, predictions),
    }
