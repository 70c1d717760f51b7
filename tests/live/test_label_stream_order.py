"""The queue Label Studio serves is the queue the backend publishes: a real Label Studio, the
label stream (``/api/projects/{id}/next``) followed while submitting, over two full rounds of the
cold-start queue and then over every task left after a training run re-ranked them.

One project of ``N_SLICES`` slices with a budget of ``BUDGET`` (a "round" of the cold-start queue
is ``BUDGET`` tasks, one per GSCU cluster). Training runs only when the test asks for it: while
the stream is followed, the webhooks' training jobs are recorded and dropped, so the queue is not
re-ranked under the annotator's feet.
"""

from __future__ import annotations

import threading

import httpx
import numpy as np
import pytest

from backend.labelstudio.brush import mask_to_result, parse_label_config
from backend.labelstudio.client import QUEUE_VIEW_TITLE
from tests.fakes import png_bytes
from tests.live.test_integration_labelstudio import (  # noqa: F401 (fixtures)
    REPO,
    auth,
    backend,
    disk_mask,
    import_pngs,
    synthetic_slice,
    wait_for_jobs_idle,
)

pytestmark = pytest.mark.slow

N_SLICES = 12
ROUNDS = 2
BUDGET = 3  # the backend fixture's budget


class HeldTraining:
    """Stands in for the train handler while the stream is followed: training jobs are counted,
    not run."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.dropped = 0

    def __call__(self, job, progress) -> None:
        with self.lock:
            self.dropped += 1


def published_order(ls, project_id: int) -> tuple[str, list[int]]:
    """The version the project serves and its predictions' tasks by ascending score."""
    version = ls.projects.get(id=project_id).model_version
    predictions = [p for p in ls.predictions.list(project=project_id) if p.model_version == version]
    scores = [p.score for p in predictions]
    assert len(set(scores)) == len(scores), "tied scores leave the order to the server"
    return version, [p.task for p in sorted(predictions, key=lambda p: p.score)]


def follow_stream(client: httpx.Client, project_id: int, n: int, slice_of: dict) -> list[int]:
    """``n`` tasks from the label stream, each submitted (with its disk drawn) before the next is
    asked for: a served task stays locked to its annotator until then."""
    control = parse_label_config((REPO / "label_config.xml").read_text())
    served = []
    for _ in range(n):
        answer = client.get(f"/api/projects/{project_id}/next")
        assert answer.status_code == 200, answer.text
        task_id = answer.json()["id"]
        served.append(task_id)
        result = mask_to_result(slice_truth(slice_of[task_id]), control)
        submitted = client.post(
            f"/api/tasks/{task_id}/annotations/", json={"result": result, "task": task_id}
        )
        assert submitted.status_code == 201, submitted.text
    return served


def slice_pixels(i: int) -> np.ndarray:
    """Twelve distinct slices: the integration test's six disks, then the same six mirrored."""
    pixels = synthetic_slice(i % 6)
    return pixels if i < 6 else pixels[:, ::-1].copy()


def slice_truth(i: int) -> np.ndarray:
    mask = disk_mask(i % 6)
    return mask if i < 6 else mask[:, ::-1].copy()


def test_next_serves_the_published_queue_before_and_after_a_re_rank(label_studio, backend):  # noqa: F811
    from label_studio_sdk.client import LabelStudio

    jobs = backend.jobs
    wait_for_jobs_idle(jobs)
    ls = LabelStudio(base_url=label_studio.url, api_key=label_studio.token)
    project_id = ls.projects.create(
        title="sugfw stream order", label_config=(REPO / "label_config.xml").read_text()
    ).id
    import_pngs(
        label_studio,
        project_id,
        {f"order_{i}.png": png_bytes(slice_pixels(i)) for i in range(N_SLICES)},
    )
    slice_of = {
        task.id: next(i for i in range(N_SLICES) if task.data["image"].endswith(f"-order_{i}.png"))
        for task in ls.tasks.list(project=project_id)
    }
    real_train, held = jobs.handlers["train"], HeldTraining()
    jobs.handlers["train"] = held
    try:
        ls.ml.create(project=project_id, url=backend.url, title="sugfw")
        wait_for_jobs_idle(jobs)
        cold_version, cold = published_order(ls, project_id)
        assert cold_version.startswith("sugfw-litemedsam-") and len(cold) == N_SLICES
        with httpx.Client(
            base_url=label_studio.url, headers=auth(label_studio), timeout=30.0
        ) as client:
            served = follow_stream(client, project_id, ROUNDS * BUDGET, slice_of)
        assert served == cold[: ROUNDS * BUDGET]
        wait_for_jobs_idle(jobs)
        assert held.dropped >= 1  # the submissions did ask for training

        jobs.handlers["train"] = real_train
        jobs.submit("train", project_id)  # what the held webhooks asked for
        wait_for_jobs_idle(jobs, quiet_s=2.0)
        assert jobs.snapshot()["last_error"] is None
        jobs.handlers["train"] = held

        version, ranked = published_order(ls, project_id)
        assert version == "sugfw-unet-1"
        left = [task for task in cold if task not in served]
        assert sorted(ranked) == sorted(left)
        assert ranked != left, "the re-rank kept the cold-start order: nothing is tested"
        # "Label Tasks As Displayed" follows the queue tab: the same order.
        (view,) = [
            v for v in ls.views.list(project=project_id) if v.data.get("title") == QUEUE_VIEW_TITLE
        ]
        listed = [t.id for t in ls.tasks.list(project=project_id, view=view.id, fields="task_only")]
        assert [task for task in listed if task in set(ranked)] == ranked
        with httpx.Client(
            base_url=label_studio.url, headers=auth(label_studio), timeout=30.0
        ) as client:
            after = follow_stream(client, project_id, len(ranked), slice_of)
        assert after == ranked
    finally:
        wait_for_jobs_idle(jobs)
        jobs.handlers["train"] = real_train
