"""The score job at project scale against a real Label Studio: what each step costs.

A fast deterministic stand-in replaces the SAM scorer here (and only here): this test measures
the Label Studio side — listing, publishing, /setup, an import and a training run's re-rank —
not the model. Tasks carry tiny PNGs as data URLs, so no file storage is involved.
``SUGFW_SCALE_TASKS`` sets the project size (default 5,000, docs/benchmarks.md's figures: about five
minutes on a loaded 2-core machine). The figures, and an estimate for 100,000 tasks from the
measured rates, are printed (``pytest -s``); the request budgets are asserted at any size.
"""

from __future__ import annotations

import base64
import io
import os
import resource
import time
from collections import Counter

import httpx
import numpy as np
import pytest
from label_studio_sdk import LabelStudio
from PIL import Image

from backend.config import BackendConfig
from backend.jobs.publish import publish_round
from backend.jobs.queue import Job, JobQueue, Progress
from backend.jobs.score_job import ScoreJob
from backend.jobs.storage import PredictionStore
from backend.labelstudio.client import IMPORT_CHUNK, PAGE_SIZE, ProjectClient
from backend.model import SugfwModel
from backend.server.app import create_app
from sugfw.records import SliceRecord, content_hash

# Thousands of requests to one SQLite-backed server: minutes on a quiet machine, more on a busy one.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]

N_TASKS = int(os.environ.get("SUGFW_SCALE_TASKS", "5000"))
N_NEW = 100
LABEL_CONFIG = """<View>
  <Image name="image" value="$image"/>
  <BrushLabels name="label" toName="image"><Label value="left_atrium"/></BrushLabels>
</View>"""


def data_url(seed: int) -> str:
    pixels = np.random.default_rng(seed).integers(0, 255, (16, 16), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


class StandInScorer:
    """Deterministic records from the pixels, in microseconds (the backend's scorer interface)."""

    def __init__(self) -> None:
        self.computed: list[str] = []
        self._cache: dict[str, SliceRecord] = {}

    def identity(self) -> dict:
        return {"model": "stand-in"}

    def score(self, image: np.ndarray, slice_id: str) -> SliceRecord:
        digest = content_hash(image)
        self.computed.append(slice_id)
        rng = np.random.default_rng(int(digest[:12], 16))
        features = rng.standard_normal(256).astype(np.float32)
        record = SliceRecord(
            slice_id,
            digest,
            features,
            features.copy(),
            float(0.5 + rng.uniform(0, 0.25)),
            image > image.mean(),
            np.zeros(image.shape, np.float16),
            1,
        )
        self._cache[digest] = record
        return record

    def cached(self, image_hash: str, slice_id: str) -> SliceRecord | None:
        record = self._cache.get(image_hash)
        if record is None:
            return None
        return SliceRecord(
            slice_id,
            record.content_hash,
            record.features_pgdr,
            record.features_mean,
            record.uncertainty,
            record.union_mask,
            record.uncertainty_map,
            record.masks_kept,
        )


class RequestLog:
    """Every request the backend sends, as (method, path template), with its duration."""

    def __init__(self, monkeypatch) -> None:
        self.counts: Counter = Counter()
        self.seconds: dict[tuple[str, str], list[float]] = {}
        original = httpx.Client.send

        def send(client, request, **kwargs):
            parts = [p if not p.isdigit() else "N" for p in request.url.path.split("/")]
            key = (request.method, "/".join(parts))
            began = time.perf_counter()
            try:
                return original(client, request, **kwargs)
            finally:
                self.counts[key] += 1
                self.seconds.setdefault(key, []).append(time.perf_counter() - began)

        monkeypatch.setattr(httpx.Client, "send", send)

    def total(self) -> int:
        return sum(self.counts.values())

    def reset(self) -> None:
        self.counts.clear()
        self.seconds.clear()

    def summary(self) -> str:
        return ", ".join(f"{m} {p}: {n}" for (m, p), n in sorted(self.counts.items()))


def import_tasks(ls: LabelStudio, project_id: int, seeds: range) -> None:
    seeds = list(seeds)
    for start in range(0, len(seeds), 1000):
        batch = [{"image": data_url(seed)} for seed in seeds[start : start + 1000]]
        ls.projects.import_tasks(id=project_id, request=batch)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


IMPORT_PATH = ("POST", "/api/projects/N/import/predictions")
TARGET = 100_000


def test_project_scale_costs_what_changed(label_studio, tmp_path, monkeypatch, capsys):
    ls = LabelStudio(base_url=label_studio.url, api_key=label_studio.token)
    project = ls.projects.create(title=f"scale {N_TASKS}", label_config=LABEL_CONFIG)
    started = time.perf_counter()
    import_tasks(ls, project.id, range(N_TASKS))
    import_s = time.perf_counter() - started

    config = BackendConfig(
        label_studio_url=label_studio.url,
        label_studio_api_key=label_studio.token,
        state_dir=tmp_path / "state",
        budget=0.01,
        debounce_s=0.0,
    )
    scorer = StandInScorer()
    store = PredictionStore(config.state_dir / "predictions")
    job = ScoreJob(config, scorer, store)
    requests = RequestLog(monkeypatch)

    def run() -> float:
        progress = Progress(Job("score", str(project.id), 0.0, 0.0, 0.0))
        began = time.perf_counter()
        job(progress.job, progress)
        return time.perf_counter() - began

    def version_counts() -> dict[str, int]:
        client = ProjectClient.connect(config, project.id)
        try:
            return client.version_counts()
        finally:
            client.close()

    # First publish: a few bulk imports, no request per task.
    first_s = run()
    first_requests, first_counts = requests.total(), requests.summary()
    first_counts_raw = dict(requests.counts)
    first_wait_s = sum(sum(durations) for durations in requests.seconds.values())
    first_import_s = list(requests.seconds[IMPORT_PATH])
    assert len(scorer.computed) == N_TASKS
    assert first_requests <= 100
    served = ls.projects.get(id=project.id).model_version
    assert version_counts() == {served: N_TASKS}

    # /setup with nothing changed: answers at once and queues nothing.
    model = SugfwModel(config)
    jobs = JobQueue(config.state_dir, {"score": job}, debounce_s=60.0)
    app = create_app(config, model, jobs=jobs)
    client = app.test_client()
    requests.reset()
    began = time.perf_counter()
    answer = client.post(
        "/setup", json={"project": f"{project.id}.1712345678", "schema": LABEL_CONFIG}
    )
    setup_s = time.perf_counter() - began
    assert answer.status_code == 200 and answer.get_json()["model_version"] == served
    assert jobs.pending() == []
    setup_requests = requests.total()

    # An import of N_NEW tasks: exactly those are scored, only their predictions written.
    import_tasks(ls, project.id, range(N_TASKS, N_TASKS + N_NEW))
    scorer.computed.clear()
    requests.reset()
    import_run_s = run()
    import_requests, import_counts = requests.total(), requests.summary()
    (small_import_s,) = requests.seconds[IMPORT_PATH]  # one request of N_NEW predictions
    assert len(scorer.computed) == N_NEW
    assert not any(method == "DELETE" for method, _ in requests.counts)
    assert version_counts() == {served: N_TASKS + N_NEW}

    # A training run's re-rank of every task: the round's order as a new version.
    n = N_TASKS + N_NEW
    order = np.random.default_rng(0).permutation(sorted(job.states.get(project.id).published))
    scores = {int(task_id): rank / n for rank, task_id in enumerate(order)}
    results = {task_id: store.get(task_id)["result"] for task_id in scores}
    requests.reset()
    project_client = ProjectClient.connect(config, project.id)
    began = time.perf_counter()
    try:
        publish_round(
            project_client, store, job.states, str(project.id), results, scores, "sugfw-unet-1"
        )
    finally:
        project_client.close()
    rerank_s = time.perf_counter() - began
    rerank_requests, rerank_counts = requests.total(), requests.summary()
    rerank_wait_s = sum(sum(durations) for durations in requests.seconds.values())
    assert rerank_requests <= 100
    assert ls.projects.get(id=project.id).model_version == "sugfw-unet-1"
    assert version_counts() == {served: n, "sugfw-unet-1": n}  # the cold-start batch stays
    with httpx.Client(
        base_url=label_studio.url,
        headers={"Authorization": f"Token {label_studio.token}"},
        timeout=60.0,
    ) as http:
        began = time.perf_counter()
        head = http.get(f"/api/projects/{project.id}/next").json()["id"]
        next_s = time.perf_counter() - began
    assert head == int(order[0])  # the re-ranked queue's head is served first
    listed = ls.predictions.list(project=project.id)
    per_task = Counter((p.task, p.model_version) for p in listed)
    assert len(per_task) == 2 * n and set(per_task.values()) == {1}  # one of each version each

    # 100,000 tasks, from the measured rates. The backend's own work (listing, scoring with the
    # stand-in, GSCU, the local store) is taken as linear in N. Label Studio recounts every
    # task's counters after each prediction import (1.23, default flags), so an import request
    # costs a part that grows with the project, which the N_NEW-prediction request isolates.
    scale = TARGET / N_TASKS
    first_chunk = N_TASKS / len(first_import_s)
    per_prediction_s = max((np.mean(first_import_s) - small_import_s) / (first_chunk - N_NEW), 0.0)
    recount_s = max(small_import_s - N_NEW * per_prediction_s, 0.0)
    chunks = -(-TARGET // IMPORT_CHUNK)
    local_s = first_s - sum(first_import_s)
    estimate_s = local_s * scale + chunks * (IMPORT_CHUNK * per_prediction_s + recount_s * scale)
    pages = first_counts_raw[("GET", "/api/tasks/")]
    estimate_requests = first_requests - pages - len(first_import_s) + TARGET // PAGE_SIZE + 1
    estimate_requests += chunks

    with capsys.disabled():
        print(f"\n--- score job at {N_TASKS} tasks (stand-in scorer, real Label Studio) ---")
        print(f"import of {N_TASKS} tasks into Label Studio: {import_s:.1f} s")
        print(f"first publish: {first_s:.1f} s, {first_requests} requests ({first_counts})")
        print(f"  waiting on Label Studio: {first_wait_s:.1f} s; the backend's own work the rest")
        print(
            f"  import requests of {first_chunk:.0f}: {np.mean(first_import_s):.2f} s each "
            f"(max {max(first_import_s):.2f} s)"
        )
        print(
            f"/setup with nothing changed: {1000 * setup_s:.0f} ms, {setup_requests} request(s), "
            "no job"
        )
        print(
            f"import of {N_NEW} more: {import_run_s:.1f} s, {len(scorer.computed)} scored, "
            f"{import_requests} requests ({import_counts}); its import request "
            f"{small_import_s:.2f} s"
        )
        print(
            f"re-rank of {n} tasks: {rerank_s:.1f} s ({rerank_wait_s:.1f} s waiting on Label "
            f"Studio), {rerank_requests} requests ({rerank_counts})"
        )
        print(f"/next after the re-rank: {1000 * next_s:.0f} ms")
        print(
            f"estimate at {TARGET} tasks: first publish ≈ {estimate_s:.0f} s, "
            f"≈ {estimate_requests:.0f} requests (per prediction {1000 * per_prediction_s:.2f} ms, "
            f"counter recount {recount_s:.2f} s per request at {N_TASKS} tasks, × {scale:.0f})"
        )
        print(f"peak RSS of the test process: {peak_rss_mb():.0f} MB")
    assert setup_s <= 1.0
