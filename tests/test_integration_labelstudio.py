"""Cold start against a real Label Studio: connect the backend, score, and check the queue it serves.

The server runs from its own venv (``.venv-ls``, installed on first use; the test skips without
network). The backend runs in this process on 127.0.0.1 with LiteMedSAM, K=1 and one box size, so
six small slices score in seconds on a CPU.
"""

from __future__ import annotations

import io
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from werkzeug.serving import make_server

from backend.server.app import create_app
from backend.labelstudio.brush import mask_to_result, parse_label_config, result_to_mask
from backend.config import BackendConfig
from backend.labelstudio.client import PRIORITY_ORDERING, PRIORITY_VIEW_TITLE
from backend.model import SugfwModel
from backend.jobs.slice_scorer import SliceScorer
from sugfw.data import load_image_file
from sugfw.everything import EverythingSettings
from sugfw.models import build_model
from sugfw.scoring import Scorer, ScoringSettings
from sugfw.selection import get_strategy, resolve_budget

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
N_SLICES, BUDGET, K, GRID = 6, 3, 1, (128,)
JOB_TIMEOUT_S = 240.0


def disk_mask(i: int, size: int = 96) -> np.ndarray:
    """The bright disk of slice i: position and radius vary with i."""
    rows, cols = np.mgrid[:size, :size]
    centre = (28 + 8 * (i % 3), 30 + 7 * i)
    radius = 10 + 3 * i
    return (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 <= radius**2


def synthetic_slice(i: int, size: int = 96) -> np.ndarray:
    """A bright disk on a noisy, shaded background: uint8."""
    rng = np.random.default_rng(100 + i)
    cols = np.mgrid[:size, :size][1]
    image = 40 + 0.3 * cols + 12 * rng.standard_normal((size, size)) + 150 * disk_mask(i, size)
    return np.clip(image, 0, 255).astype(np.uint8)


def png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def slices(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("slices")
    paths = []
    for i in range(N_SLICES):
        path = folder / f"slice_{i}.png"
        path.write_bytes(png_bytes(synthetic_slice(i)))
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def backend(label_studio, tmp_path_factory, one_torch_thread):
    """The Flask app, its job worker started, served on 127.0.0.1 from a thread."""
    config = BackendConfig(
        label_studio_url=label_studio.url, label_studio_api_key=label_studio.token, model="litemedsam",
        device="cpu", k=K, grid=GRID, budget=BUDGET, state_dir=tmp_path_factory.mktemp("backend-state"),
        debounce_s=0.2, train_iterations=5, train_crop=64, train_batch_size=2,
    )
    model = SugfwModel(config, scorer=SliceScorer(config))
    app = create_app(config, model)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="backend-http", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", app.config["SUGFW_JOBS"]
    finally:
        server.shutdown()
        app.config["SUGFW_JOBS"].stop()


@pytest.fixture(scope="module")
def connected_project(label_studio, backend, slices):
    """A project from label_config.xml with the slices imported, connected to the backend and scored."""
    from label_studio_sdk.client import LabelStudio

    backend_url, jobs = backend
    ls = LabelStudio(base_url=label_studio.url, api_key=label_studio.token)
    project = ls.projects.create(title="sugfw cold start", label_config=(REPO / "label_config.xml").read_text())
    # One form field per file: files sharing a field name collapse into one task.
    files = {f"file{i}": (path.name, path.read_bytes(), "image/png") for i, path in enumerate(slices)}
    answer = httpx.post(
        f"{label_studio.url}/api/projects/{project.id}/import", params={"return_task_ids": "true"},
        files=files, headers=auth(label_studio), timeout=60.0,
    )
    assert answer.status_code == 201, answer.text
    assert len(answer.json()["task_ids"]) == N_SLICES

    ls.ml.create(project=project.id, url=backend_url, title="sugfw")  # → /setup → a score job
    wait_for_score_job(jobs)
    return ls, project.id


def auth(label_studio) -> dict[str, str]:
    return {"Authorization": f"Token {label_studio.token}"}


def wait_for_score_job(jobs) -> None:
    """Until no score job is queued or running (training jobs, if any, are not waited for)."""
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while time.monotonic() < deadline:
        state = jobs.snapshot()
        assert_no_failed_score_job(state)
        running = (state["running"] or {}).get("job") == "score"
        if state["completed"] >= 1 and not running and all(job["job"] != "score" for job in state["pending"]):
            return
        time.sleep(0.5)
    pytest.fail(f"the score job did not finish within {JOB_TIMEOUT_S:.0f} s: {jobs.snapshot()}")


def wait_for_jobs_idle(jobs, quiet_s: float = 1.5) -> None:
    """Until no job has been queued or running for ``quiet_s`` (webhooks may still be on their way)."""
    deadline, quiet_since = time.monotonic() + JOB_TIMEOUT_S, None
    while time.monotonic() < deadline:
        state = jobs.snapshot()
        if state["running"] is None and not state["pending"]:
            quiet_since = quiet_since or time.monotonic()
            if time.monotonic() - quiet_since >= quiet_s:
                return
        else:
            quiet_since = None
        time.sleep(0.2)
    pytest.fail(f"jobs still busy after {JOB_TIMEOUT_S:.0f} s: {jobs.snapshot()}")


def assert_no_failed_score_job(state: dict) -> None:
    error = state["last_error"] or ""
    assert not error.startswith("score job"), error


@dataclass(frozen=True)
class LibraryQueue:
    order: list[int]
    """Task ids in GSCU queue order."""
    masks: dict[int, np.ndarray]
    ranks: dict[int, int]
    clusters: dict[int, int]


@pytest.fixture(scope="module")
def library_queue(connected_project, slices):
    """Task ids in GSCU order and each task's union mask, from the library alone on the same pixels."""
    ls, project_id = connected_project
    tasks = sorted(ls.tasks.list(project=project_id), key=lambda task: task.id)
    by_name = {path.name: path for path in slices}
    # Uploads are stored as "<hash>-<original name>".
    paths = [next(p for name, p in by_name.items() if task.data["image"].endswith("-" + name)) for task in tasks]
    model = build_model("litemedsam", device="cpu")
    scorer = Scorer(model, ScoringSettings(EverythingSettings.for_model(model, grid=GRID), k=K, seed=0))
    records = [scorer.score_image(load_image_file(path)) for path in paths]
    spec = get_strategy("gscu")
    features = np.stack([r.features_pgdr for r in records])
    selection = spec.select(features, np.array([r.uncertainty for r in records]), resolve_budget(BUDGET, len(records)), 0)
    ids = [task.id for task in tasks]
    return LibraryQueue(
        order=[ids[i] for i in selection.order],
        masks={task_id: records[i].union_mask for i, task_id in enumerate(ids)},
        ranks={task_id: int(rank) for task_id, rank in zip(ids, selection.ranks())},
        clusters={task_id: int(cluster) for task_id, cluster in zip(ids, selection.clusters)},
    )


def test_each_prediction_decodes_to_the_sam_union_mask(connected_project, library_queue):
    ls, project_id = connected_project
    masks, ranks = library_queue.masks, library_queue.ranks
    project = ls.projects.get(id=project_id)
    assert project.model_version.startswith("sugfw-litemedsam-")
    assert project.sampling == "Uncertainty sampling"
    predictions = [p for p in ls.predictions.list(project=project_id) if p.model_version == project.model_version]
    assert sorted(p.task for p in predictions) == sorted(masks)  # exactly one per task
    assert any(mask.any() for mask in masks.values())  # the slices do have something to prefill
    for prediction in predictions:
        assert prediction.score == ranks[prediction.task] / N_SLICES  # queue position, scaled into [0, 1)
        assert prediction.cluster == library_queue.clusters[prediction.task]
        (item,) = prediction.result
        assert item["value"]["brushlabels"] == ["left_atrium"]
        np.testing.assert_array_equal(result_to_mask(item), masks[prediction.task])


def test_tasks_carry_a_numeric_priority_and_a_tab_sorts_by_it(connected_project, library_queue):
    ls, project_id = connected_project
    ranks = library_queue.ranks
    priorities = {task.id: task.data["priority"] for task in ls.tasks.list(project=project_id)}
    assert priorities == ranks
    assert all(type(value) is int for value in priorities.values())
    views = [dict(view.data or {}) for view in ls.views.list(project=project_id)]
    assert [view["ordering"] for view in views if view.get("title") == PRIORITY_VIEW_TITLE] == [PRIORITY_ORDERING]


def test_predict_serves_the_stored_prediction(connected_project, backend, library_queue):
    ls, project_id = connected_project
    backend_url, _ = backend
    masks, ranks = library_queue.masks, library_queue.ranks
    task = next(iter(ls.tasks.list(project=project_id)))
    answer = httpx.post(f"{backend_url}/predict", json={"tasks": [{"id": task.id, "data": task.data}]}, timeout=30.0)
    (prediction,) = answer.json()["results"]
    assert prediction["score"] == ranks[task.id] / N_SLICES
    assert prediction["model_version"] == ls.projects.get(id=project_id).model_version
    np.testing.assert_array_equal(result_to_mask(prediction["result"][0]), masks[task.id])


def test_retrieving_predictions_again_adds_no_duplicates(label_studio, connected_project, backend):
    # Label Studio asks /setup for the backend's version, then /predict only for tasks without a
    # prediction of that version: /setup answers the published batch, so nothing is re-predicted.
    ls, project_id = connected_project
    _, jobs = backend
    answer = httpx.post(
        f"{label_studio.url}/api/dm/actions", params={"id": "retrieve_tasks_predictions", "project": project_id},
        json={"selectedItems": {"all": True, "excluded": []}}, headers=auth(label_studio), timeout=60.0,
    )
    assert answer.status_code == 200, answer.text
    wait_for_score_job(jobs)  # the /setup call queued one; it finds the queue unchanged
    tasks = [p.task for p in ls.predictions.list(project=project_id)]
    assert sorted(tasks) == sorted(set(tasks)) and len(tasks) == N_SLICES


def test_label_stream_serves_tasks_in_gscu_order(label_studio, connected_project, library_queue):
    # Last: it annotates every task. A served task stays locked to its annotator, so each one is
    # submitted (with an empty result) before the next is asked for.
    _, project_id = connected_project
    expected = library_queue.order
    served = []
    with httpx.Client(base_url=label_studio.url, headers=auth(label_studio), timeout=30.0) as client:
        for _ in expected:
            answer = client.get(f"/api/projects/{project_id}/next")
            assert answer.status_code == 200, answer.text
            task_id = answer.json()["id"]
            served.append(task_id)
            submitted = client.post(f"/api/tasks/{task_id}/annotations/", json={"result": [], "task": task_id})
            assert submitted.status_code == 201, submitted.text
    assert served == expected


def test_imported_task_joins_a_new_batch_and_the_old_one_goes(label_studio, connected_project, backend):
    # Label Studio sends TASKS_CREATED to the backend's webhook; the score job re-ranks all tasks.
    ls, project_id = connected_project
    _, jobs = backend
    wait_for_jobs_idle(jobs)  # training runs after the stream's submissions also switch the served version
    old_version = ls.projects.get(id=project_id).model_version
    answer = httpx.post(
        f"{label_studio.url}/api/projects/{project_id}/import", params={"return_task_ids": "true"},
        files={"file": ("slice_new.png", png_bytes(synthetic_slice(N_SLICES)), "image/png")},
        headers=auth(label_studio), timeout=60.0,
    )
    (new_task,) = answer.json()["task_ids"]
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while ls.projects.get(id=project_id).model_version == old_version:
        assert time.monotonic() < deadline, f"no new batch within {JOB_TIMEOUT_S:.0f} s: {jobs.snapshot()}"
        assert_no_failed_score_job(jobs.snapshot())
        time.sleep(0.5)
    wait_for_score_job(jobs)
    new_version = ls.projects.get(id=project_id).model_version
    versions = [(p.task, p.model_version) for p in ls.predictions.list(project=project_id)]
    assert sorted(task for task, version in versions if version == new_version) == sorted(
        task.id for task in ls.tasks.list(project=project_id)
    )
    # The old batch was deleted (the UNet's predictions of tasks unlabelled at its run are not cold-start ones).
    assert all(version == new_version for _, version in versions if not version.startswith("sugfw-unet-"))
    with httpx.Client(base_url=label_studio.url, headers=auth(label_studio), timeout=30.0) as client:
        assert client.get(f"/api/projects/{project_id}/next").json()["id"] == new_task  # the only one left


def test_annotations_train_the_unet_once_and_its_masks_replace_sam(label_studio, backend):
    """A second project: two training slices, one test slice (data.split = "test"), one left unlabelled."""
    from label_studio_sdk.client import LabelStudio

    backend_url, jobs = backend
    wait_for_jobs_idle(jobs)
    ls = LabelStudio(base_url=label_studio.url, api_key=label_studio.token)
    label_config = (REPO / "label_config.xml").read_text()
    project_id = ls.projects.create(title="sugfw training", label_config=label_config).id
    files = {f"file{i}": (f"train_{i}.png", png_bytes(synthetic_slice(i)), "image/png") for i in range(4)}
    answer = httpx.post(
        f"{label_studio.url}/api/projects/{project_id}/import", params={"return_task_ids": "true"},
        files=files, headers=auth(label_studio), timeout=60.0,
    )
    assert answer.status_code == 201, answer.text
    tasks = sorted(ls.tasks.list(project=project_id), key=lambda task: task.id)
    slice_of = {task.id: next(i for i in range(4) if task.data["image"].endswith(f"-train_{i}.png")) for task in tasks}
    train_ids, test_id, unlabelled_id = [tasks[0].id, tasks[1].id], tasks[2].id, tasks[3].id
    ls.tasks.update(id=str(test_id), data={**tasks[2].data, "split": "test", "case_id": "c2", "slice_index": 0,
                                           "spacing": [0.8, 0.8, 2.5]})
    ls.ml.create(project=project_id, url=backend_url, title="sugfw")
    wait_for_jobs_idle(jobs)
    cold_version = ls.projects.get(id=project_id).model_version
    cold = {p.task: (p.score, p.cluster) for p in ls.predictions.list(project=project_id) if p.model_version == cold_version}
    assert sorted(cold) == sorted(slice_of)

    control = parse_label_config(label_config)
    jobs.debounce_s = 3.0  # the three submissions below are one burst however slowly the server answers
    try:
        with httpx.Client(base_url=label_studio.url, headers=auth(label_studio), timeout=30.0) as client:
            for task_id in [*train_ids, test_id]:
                result = mask_to_result(disk_mask(slice_of[task_id]), control)
                submitted = client.post(f"/api/tasks/{task_id}/annotations/", json={"result": result, "task": task_id})
                assert submitted.status_code == 201, submitted.text
        wait_for_jobs_idle(jobs, quiet_s=4.0)
    finally:
        jobs.debounce_s = 0.2
    assert jobs.snapshot()["last_error"] is None

    metrics = httpx.get(f"{backend_url}/metrics", timeout=30.0).json()
    (record,) = metrics["training"][str(project_id)]  # exactly one run for the burst
    assert (record["model_version"], record["annotations"]) == ("sugfw-unet-1", 2)
    (case,) = record["cases"]
    assert (case["case_id"], case["slices"], case["hd95_unit"]) == ("c2", 1, "mm")
    summary = record["summary"]
    assert 0.0 <= summary["dice_mean"] <= 1.0 and summary["dice_std"] == 0.0
    assert np.isfinite(summary["hd95_mean"]) and summary["hd95_mean"] >= 0.0

    assert ls.projects.get(id=project_id).model_version == "sugfw-unet-1"
    unet = [p for p in ls.predictions.list(project=project_id) if p.model_version == "sugfw-unet-1"]
    assert [p.task for p in unet] == [unlabelled_id]
    assert (unet[0].score, unet[0].cluster) == cold[unlabelled_id]
    served = httpx.post(f"{backend_url}/predict", json={"tasks": [{"id": unlabelled_id, "data": tasks[3].data}]}, timeout=30.0)
    assert served.json()["results"][0]["model_version"] == "sugfw-unet-1"
