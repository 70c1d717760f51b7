"""Stand-ins and small builders shared by test files: an in-memory Label Studio project, a
recording HTTP transport, Basic-auth headers, PNG bytes and labelled toy slices.

Fixtures live in ``conftest.py`` files; this module holds what tests import by name."""

from __future__ import annotations

import base64
import io
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from backend.jobs.queue import Job, Progress
from backend.labelstudio.brush import mask_to_result, parse_label_config

REPO = Path(__file__).resolve().parents[1]
LABEL_CONFIG = (REPO / "label_config.xml").read_text()
"""The repository's labelling config (a brush control; ``/setup`` refuses schemas without one)."""
CONTROL = parse_label_config(LABEL_CONFIG)
USER, PASSWORD = "annotator", "s3cret pass"
"""Basic-auth credentials of the test apps that have auth on."""
LEGACY_KEY = "0123456789abcdef0123456789abcdef01234567"
"""A legacy Label Studio API token (sent as ``Authorization: Token <key>``)."""
SQUARE_SIDE = 32
"""Side of :func:`slice_with_square`'s slices."""


class FakeProject:
    """The ProjectClient calls the score and train jobs make, in memory, with the server's rule
    that a project is served by a prediction version only once a prediction carries it.

    Records each create (its sorted task ids), the ids each delete removed, the sampling and
    version the project is served by, and how often the queue view was ensured."""

    def __init__(self, tasks: list[dict]) -> None:
        self.task_list = tasks
        self.stored: list[dict] = []
        self.next_id = 1
        self.creates: list[list[int]] = []
        self.deleted: list[int] = []
        self.sampling: str | None = None
        self.model_version: str | None = None
        self.views = 0

    def label_config(self) -> str:
        return LABEL_CONFIG

    def close(self) -> None:
        pass

    def fingerprint(self) -> dict:
        return {"tasks": len(self.task_list), "label_config": LABEL_CONFIG}

    def tasks(self) -> list[dict]:
        return [{"id": task["id"], "data": dict(task["data"])} for task in self.task_list]

    def annotated_tasks(self) -> list[dict]:
        return [dict(task) for task in self.task_list if task.get("annotations")]

    def version_counts(self) -> dict[str, int]:
        return dict(Counter(p["model_version"] for p in self.stored))

    def add_prediction(self, task_id: int, prediction: dict) -> None:
        self.stored.append({"id": self.next_id, "task": task_id, **prediction})
        self.next_id += 1

    def create_predictions(self, predictions: dict) -> None:
        self.creates.append(sorted(predictions))
        for task_id, prediction in predictions.items():
            self.add_prediction(task_id, prediction)

    def delete_version(self, model_version: str) -> int:
        gone = [p["id"] for p in self.stored if p["model_version"] == model_version]
        self.deleted += gone
        self.stored = [p for p in self.stored if p["model_version"] != model_version]
        return len(gone)

    def serve_by_prediction_score(self, model_version: str) -> None:
        assert any(p["model_version"] == model_version for p in self.stored), (
            "no prediction carries this version yet"
        )
        self.sampling, self.model_version = "Uncertainty sampling", model_version

    def ensure_queue_view(self) -> None:
        self.views += 1

    def predictions_of(self, version: str) -> dict[int, dict]:
        found = {}
        for p in self.stored:
            if p["model_version"] == version:
                assert p["task"] not in found, f"task {p['task']} has two predictions of {version}"
                found[p["task"]] = p
        return found


def run_score_job(job, project: int | str = 7) -> Progress:
    """Runs a score job for ``project`` (7, the score-job tests' project, unless given) at once;
    returns its progress."""
    progress = Progress(Job("score", str(project), 0.0, 0.0, 0.0))
    job(progress.job, progress)
    return progress


class Recorder:
    """An httpx.MockTransport that records every request and answers from ``routes``."""

    def __init__(self, routes: dict[str, httpx.Response] | None = None) -> None:
        self.routes = routes or {}
        self.seen: list[str] = []
        self.transport = httpx.MockTransport(self.handle)

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(str(request.url))
        return self.routes.get(str(request.url), httpx.Response(404))


def basic(user: str, password: str) -> dict[str, str]:
    """The Basic ``Authorization`` header of ``user:password``."""
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def png_bytes(pixels: np.ndarray) -> bytes:
    """``pixels`` encoded as a PNG file."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def slice_with_square(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A bright square on a dark noisy background, and the square as the truth."""
    rng = np.random.default_rng(seed)
    image = rng.normal(60.0, 10.0, (SQUARE_SIDE, SQUARE_SIDE))
    truth = np.zeros((SQUARE_SIDE, SQUARE_SIDE), dtype=bool)
    top, left = rng.integers(4, 14, size=2)
    truth[top : top + 12, left : left + 12] = True
    image[truth] += 120.0
    return np.clip(image, 0, 255).astype(np.uint8), truth


def annotation(mask: np.ndarray, annotation_id: int, **extra) -> dict:
    """A submitted annotation whose brush result is ``mask`` (no result when it is empty)."""
    result = mask_to_result(mask, CONTROL) if mask.any() else []
    return {
        "id": annotation_id,
        "result": result,
        "was_cancelled": False,
        "updated_at": "2026-01-01T00:00:00Z",
        **extra,
    }
