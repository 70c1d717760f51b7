"""Cold start against a real Label Studio: connect the backend, score, check the queue it serves.

The server runs from its own venv (``.venv-ls``, installed on first use; the test skips without
network). The backend runs in this process on 127.0.0.1 with LiteMedSAM, K=1 and one box size, so
six small slices score in seconds on a CPU.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from werkzeug.serving import make_server

from backend.config import BackendConfig
from backend.jobs.slice_scorer import SliceScorer
from backend.labelstudio.brush import mask_to_result, parse_label_config, result_to_mask
from backend.labelstudio.client import QUEUE_ORDERING, QUEUE_VIEW_TITLE, ProjectClient
from backend.model import SugfwModel
from backend.server.app import create_app
from sugfw.data import load_image_file
from sugfw.everything import EverythingSettings
from sugfw.models import build_model
from sugfw.scoring import Scorer, ScoringSettings
from sugfw.selection import get_strategy, resolve_budget
from tests.fakes import png_bytes

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
N_SLICES, BUDGET, K, GRID = 6, 3, 1, (128,)
JOB_TIMEOUT_S = 240.0
TRAIN_ITERATIONS = 30
MIN_UNET_DICE = 0.8


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


@pytest.fixture(scope="module")
def slices(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("slices")
    paths = []
    for i in range(N_SLICES):
        path = folder / f"slice_{i}.png"
        path.write_bytes(png_bytes(synthetic_slice(i)))
        paths.append(path)
    return paths


class ScoreRuns:
    """The backend's real score handler, counting the runs it finished per project, so that a
    test waits for the run its own action queued rather than for any earlier one."""

    def __init__(self, handler) -> None:
        self.handler = handler
        self.lock = threading.Lock()
        self.finished: dict[str, int] = {}

    def __call__(self, job, progress) -> None:
        self.handler(job, progress)
        with self.lock:
            self.finished[job.project] = self.finished.get(job.project, 0) + 1

    def count(self, project_id: int) -> int:
        with self.lock:
            return self.finished.get(str(project_id), 0)


@dataclass
class Backend:
    url: str
    jobs: object
    runs: ScoreRuns
    config: BackendConfig


@pytest.fixture(scope="module")
def backend(label_studio, tmp_path_factory, one_torch_thread):
    """The Flask app, its job worker started, served on 127.0.0.1 from a thread."""
    config = BackendConfig(
        label_studio_url=label_studio.url,
        label_studio_api_key=label_studio.token,
        model="litemedsam",
        device="cpu",
        k=K,
        grid=GRID,
        budget=BUDGET,
        state_dir=tmp_path_factory.mktemp("backend-state"),
        debounce_s=0.2,
        train_iterations=TRAIN_ITERATIONS,
        train_crop=64,
        train_batch_size=2,
        metrics_detail=True,  # the checks below read the test case's id from /metrics
    )
    model = SugfwModel(config, scorer=SliceScorer(config))
    app = create_app(config, model)
    jobs = app.config["SUGFW_JOBS"]
    runs = ScoreRuns(jobs.handlers["score"])
    jobs.handlers["score"] = runs
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="backend-http", daemon=True)
    thread.start()
    try:
        yield Backend(f"http://127.0.0.1:{server.server_port}", jobs, runs, config)
    finally:
        server.shutdown()
        jobs.stop()


def auth(label_studio) -> dict[str, str]:
    return {"Authorization": f"Token {label_studio.token}"}


def import_pngs(label_studio, project_id: int, files: dict[str, bytes]) -> list[int]:
    """Upload PNGs (name → bytes) as one task each; the new task ids."""
    # One form field per file: files sharing a field name collapse into one task.
    fields = {
        f"file{i}": (name, content, "image/png") for i, (name, content) in enumerate(files.items())
    }
    answer = httpx.post(
        f"{label_studio.url}/api/projects/{project_id}/import",
        params={"return_task_ids": "true"},
        files=fields,
        headers=auth(label_studio),
        timeout=60.0,
    )
    assert answer.status_code == 201, answer.text
    task_ids = answer.json()["task_ids"]
    assert len(task_ids) == len(files)
    return task_ids


@pytest.fixture(scope="module")
def make_project(label_studio, backend, slices):
    """Factory: a project of its own from label_config.xml with the six slices, connected to the
    backend and scored. Each scenario that changes a project gets one, so none depends on another
    having run before it (the score cache makes the extra projects cheap)."""
    from label_studio_sdk.client import LabelStudio

    ls = LabelStudio(base_url=label_studio.url, api_key=label_studio.token)

    def make(title: str) -> int:
        project = ls.projects.create(
            title=title, label_config=(REPO / "label_config.xml").read_text()
        )
        import_pngs(label_studio, project.id, {path.name: path.read_bytes() for path in slices})
        before = backend.runs.count(project.id)
        ls.ml.create(project=project.id, url=backend.url, title="sugfw")  # → /setup → a score job
        wait_for_score_job(backend, project.id, before)
        return project.id

    return ls, make


@pytest.fixture(scope="module")
def connected_project(make_project):
    """The project the read-only checks share."""
    ls, make = make_project
    return ls, make("sugfw cold start")


def wait_for_score_job(backend: Backend, project_id: int, finished_before: int) -> None:
    """Until a score job of ``project_id`` has finished after the count ``finished_before`` read
    before the action that queued it, and none of that project is queued or running."""
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while time.monotonic() < deadline:
        state = backend.jobs.snapshot()
        assert_no_failed_score_job(state)
        mine = [
            job
            for job in state["pending"]
            if (job["job"], job["project"]) == ("score", str(project_id))
        ]
        running = state["running"] or {}
        if (
            backend.runs.count(project_id) > finished_before
            and not mine
            and (running.get("job"), running.get("project")) != ("score", str(project_id))
        ):
            return
        time.sleep(0.3)
    pytest.fail(
        f"no score job of project {project_id} finished within {JOB_TIMEOUT_S:.0f} s: "
        f"{backend.jobs.snapshot()}"
    )


def wait_for_jobs_idle(jobs, quiet_s: float = 1.5) -> None:
    """Until no job has been queued or running for ``quiet_s`` (webhooks may still be coming)."""
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


@pytest.fixture(scope="module")
def library_records(slices) -> dict[str, object]:
    """Each slice's record (file name → record), from the library alone on the same pixels."""
    model = build_model("litemedsam", device="cpu")
    scorer = Scorer(
        model, ScoringSettings(EverythingSettings.for_model(model, grid=GRID), k=K, seed=0)
    )
    return {path.name: scorer.score_image(load_image_file(path)) for path in slices}


@pytest.fixture(scope="module")
def library_queue(library_records):
    """Factory: the GSCU queue of a project's tasks (by id) and their masks, by the library."""

    def queue(ls, project_id: int) -> LibraryQueue:
        tasks = sorted(ls.tasks.list(project=project_id), key=lambda task: task.id)
        # Uploads are stored as "<hash>-<original name>".
        records = [
            next(
                r for name, r in library_records.items() if task.data["image"].endswith("-" + name)
            )
            for task in tasks
        ]
        spec = get_strategy("gscu")
        features = np.stack([r.features_pgdr for r in records])
        budget = resolve_budget(BUDGET, len(records))
        selection = spec.select(features, np.array([r.uncertainty for r in records]), budget, 0)
        ids = [task.id for task in tasks]
        return LibraryQueue(
            order=[ids[i] for i in selection.order],
            masks={task_id: records[i].union_mask for i, task_id in enumerate(ids)},
            ranks={task_id: int(rank) for task_id, rank in zip(ids, selection.ranks())},
        )

    return queue


def test_each_prediction_decodes_to_the_sam_union_mask(connected_project, library_queue):
    ls, project_id = connected_project
    expected = library_queue(ls, project_id)
    masks, ranks = expected.masks, expected.ranks
    project = ls.projects.get(id=project_id)
    assert project.model_version.startswith("sugfw-litemedsam-")
    assert project.sampling == "Uncertainty sampling"
    predictions = [
        p
        for p in ls.predictions.list(project=project_id)
        if p.model_version == project.model_version
    ]
    assert sorted(p.task for p in predictions) == sorted(masks)  # exactly one per task
    assert any(mask.any() for mask in masks.values())  # the slices do have something to prefill
    for prediction in predictions:
        assert (
            prediction.score == ranks[prediction.task] / N_SLICES
        )  # queue position, scaled into [0, 1)
        assert prediction.cluster is None  # the score alone orders the stream
        # One brush region per kept mask: together they draw the union.
        assert all(item["value"]["brushlabels"] == ["left_atrium"] for item in prediction.result)
        np.testing.assert_array_equal(
            _decoded_union(prediction.result, masks[prediction.task].shape),
            masks[prediction.task],
        )


def _decoded_union(items: list[dict], shape: tuple[int, int]) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    for item in items:
        mask |= result_to_mask(item)
    return mask


def test_the_queue_tab_lists_the_tasks_in_queue_order(connected_project, library_queue):
    # "Label Tasks As Displayed" follows this tab: sorted by the served version's score, with no
    # per-task write (task data stays as imported).
    ls, project_id = connected_project
    expected = library_queue(ls, project_id).order
    (view,) = [
        v for v in ls.views.list(project=project_id) if v.data.get("title") == QUEUE_VIEW_TITLE
    ]
    assert view.data["ordering"] == QUEUE_ORDERING
    listed = list(ls.tasks.list(project=project_id, view=view.id, fields="task_only"))
    assert [task.id for task in listed] == expected
    assert all("priority" not in task.data for task in listed)


def test_predict_serves_the_stored_prediction(connected_project, backend, library_queue):
    ls, project_id = connected_project
    expected = library_queue(ls, project_id)
    task = next(iter(ls.tasks.list(project=project_id)))
    answer = httpx.post(
        f"{backend.url}/predict", json={"tasks": [{"id": task.id, "data": task.data}]}, timeout=30.0
    )
    (prediction,) = answer.json()["results"]
    assert prediction["score"] == expected.ranks[task.id] / N_SLICES
    assert prediction["model_version"] == ls.projects.get(id=project_id).model_version
    np.testing.assert_array_equal(
        _decoded_union(prediction["result"], expected.masks[task.id].shape),
        expected.masks[task.id],
    )


def test_retrieving_predictions_again_adds_no_duplicates(label_studio, connected_project, backend):
    # Label Studio asks /setup for the backend's version, then /predict only for tasks without a
    # prediction of that version: /setup answers the published batch, so nothing is re-predicted.
    ls, project_id = connected_project
    before = backend.runs.count(project_id)
    ids_before = sorted(p.id for p in ls.predictions.list(project=project_id))
    answer = httpx.post(
        f"{label_studio.url}/api/dm/actions",
        params={"id": "retrieve_tasks_predictions", "project": project_id},
        json={"selectedItems": {"all": True, "excluded": []}},
        headers=auth(label_studio),
        timeout=60.0,
    )
    assert answer.status_code == 200, answer.text
    wait_for_score_job(
        backend, project_id, before
    )  # the /setup call queued one; it finds the queue unchanged
    predictions = list(ls.predictions.list(project=project_id))
    tasks = [p.task for p in predictions]
    assert sorted(tasks) == sorted(set(tasks)) and len(tasks) == N_SLICES
    assert sorted(p.id for p in predictions) == ids_before  # nothing deleted and re-created either


def test_tasks_are_listed_past_one_page(connected_project, backend, monkeypatch):
    from backend.labelstudio import client as client_module

    ls, project_id = connected_project
    monkeypatch.setattr(client_module, "PAGE_SIZE", 4)  # six tasks: two pages, the second short
    seen_pages: list[int] = []
    project = ProjectClient.connect(backend.config, project_id)
    real_list = project.client.tasks.list

    def listing(**kwargs):
        seen_pages.append(kwargs.get("page_size"))
        return real_list(**kwargs)

    project.client.tasks.list = listing
    try:
        tasks = project.tasks()
    finally:
        project.close()
    assert seen_pages == [4]
    assert [task["id"] for task in tasks] == sorted(
        task.id for task in ls.tasks.list(project=project_id)
    )
    assert len(tasks) == N_SLICES and all("image" in task["data"] for task in tasks)


def test_label_stream_serves_tasks_in_gscu_order(label_studio, make_project, library_queue):
    # A project of its own: every task gets annotated. A served task stays locked to its
    # annotator, so each one is submitted (with an empty result) before the next is asked for.
    ls, make = make_project
    project_id = make("sugfw stream")
    expected = library_queue(ls, project_id).order
    served = []
    with httpx.Client(
        base_url=label_studio.url, headers=auth(label_studio), timeout=30.0
    ) as client:
        for _ in expected:
            answer = client.get(f"/api/projects/{project_id}/next")
            assert answer.status_code == 200, answer.text
            task_id = answer.json()["id"]
            served.append(task_id)
            submitted = client.post(
                f"/api/tasks/{task_id}/annotations/", json={"result": [], "task": task_id}
            )
            assert submitted.status_code == 201, submitted.text
    assert served == expected


def test_imported_task_joins_the_served_queue(label_studio, make_project, backend):
    # Label Studio sends TASKS_CREATED to the backend's webhook, which queues a score job.
    ls, make = make_project
    project_id = make("sugfw import")
    old_ids = sorted(task.id for task in ls.tasks.list(project=project_id))
    before = backend.runs.count(project_id)
    (new_task,) = import_pngs(
        label_studio, project_id, {"slice_new.png": png_bytes(synthetic_slice(N_SLICES))}
    )
    wait_for_score_job(backend, project_id, before)
    served = ls.projects.get(id=project_id).model_version
    predictions = [
        (p.task, p.model_version, p.score) for p in ls.predictions.list(project=project_id)
    ]
    of_served = sorted(task for task, version, _ in predictions if version == served)
    assert of_served == sorted([*old_ids, new_task])  # one each, the new task included
    assert all(version == served for _, version, _ in predictions)  # no other batch of ours left
    assert all(0.0 <= score < 1.0 for _, _, score in predictions)
    # Once the old tasks are annotated, the stream serves the new one.
    with httpx.Client(
        base_url=label_studio.url, headers=auth(label_studio), timeout=30.0
    ) as client:
        for task_id in old_ids:
            submitted = client.post(
                f"/api/tasks/{task_id}/annotations/", json={"result": [], "task": task_id}
            )
            assert submitted.status_code == 201, submitted.text
        assert client.get(f"/api/projects/{project_id}/next").json()["id"] == new_task


def test_annotations_train_the_unet_once_and_its_masks_replace_sam(label_studio, backend):
    """A project of its own: two training slices, one test slice (data.split = "test"), three left
    unlabelled. The metrics are recomputed from the saved checkpoint; the UNet's mask of an
    unlabelled task is that checkpoint's, differs from SAM's, and matches the truth; the label
    stream then serves the unlabelled tasks in the round strategy's order (entropy)."""
    from label_studio_sdk.client import LabelStudio

    from backend.jobs.splits import normalise_slice
    from backend.jobs.training_history import TrainingHistory
    from sugfw.active import unet_signals
    from sugfw.metrics import case_metrics, dice
    from sugfw.segmentation import load_trained_unet
    from sugfw.segmentation.infer import segment

    jobs = backend.jobs
    wait_for_jobs_idle(jobs)
    ls = LabelStudio(base_url=label_studio.url, api_key=label_studio.token)
    label_config = (REPO / "label_config.xml").read_text()
    project_id = ls.projects.create(title="sugfw training", label_config=label_config).id
    import_pngs(
        label_studio,
        project_id,
        {f"train_{i}.png": png_bytes(synthetic_slice(i)) for i in range(6)},
    )
    tasks = sorted(ls.tasks.list(project=project_id), key=lambda task: task.id)
    slice_of = {
        task.id: next(i for i in range(6) if task.data["image"].endswith(f"-train_{i}.png"))
        for task in tasks
    }
    train_ids, test_id, unlabelled_id = [tasks[0].id, tasks[1].id], tasks[2].id, tasks[3].id
    unlabelled_ids = [task.id for task in tasks[3:]]
    spacing = [0.8, 0.8, 2.5]
    ls.tasks.update(
        id=str(test_id),
        data={
            **tasks[2].data,
            "split": "test",
            "case_id": "c2",
            "slice_index": 0,
            "spacing": spacing,
        },
    )
    ls.ml.create(project=project_id, url=backend.url, title="sugfw")
    wait_for_jobs_idle(jobs)
    cold_version = ls.projects.get(id=project_id).model_version
    cold = {
        p.task: p
        for p in ls.predictions.list(project=project_id)
        if p.model_version == cold_version
    }
    assert sorted(cold) == sorted(slice_of)

    control = parse_label_config(label_config)
    jobs.debounce_s = (
        3.0  # the three submissions below are one burst however slowly the server answers
    )
    try:
        with httpx.Client(
            base_url=label_studio.url, headers=auth(label_studio), timeout=30.0
        ) as client:
            for task_id in [*train_ids, test_id]:
                result = mask_to_result(disk_mask(slice_of[task_id]), control)
                submitted = client.post(
                    f"/api/tasks/{task_id}/annotations/", json={"result": result, "task": task_id}
                )
                assert submitted.status_code == 201, submitted.text
        wait_for_jobs_idle(jobs, quiet_s=4.0)
    finally:
        jobs.debounce_s = 0.2
    assert jobs.snapshot()["last_error"] is None

    metrics = httpx.get(f"{backend.url}/metrics", timeout=30.0).json()
    (record,) = metrics["training"][str(project_id)]  # exactly one run for the burst
    assert (record["model_version"], record["annotations"]) == ("sugfw-unet-1", 2)
    (case,) = record["cases"]
    assert (case["case_id"], case["slices"], case["hd95_unit"]) == ("c2", 1, "mm")

    # The checkpoint the run saved, on the test slice exactly as Label Studio serves it.
    checkpoint = (
        TrainingHistory(backend.config.state_dir).project_dir(project_id) / "run-1" / "best.pt"
    )
    unet = load_trained_unet(checkpoint, "cpu")

    def unet_mask(i: int) -> np.ndarray:
        image = synthetic_slice(i).astype(np.float32)
        return segment(unet, normalise_slice(image)[None], "cpu")[0] > 0

    row, col, step = spacing
    expected = case_metrics(
        unet_mask(slice_of[test_id])[None],
        disk_mask(slice_of[test_id])[None],
        (step, row, col),
        rule="physical",
    )
    assert case["dice"] == pytest.approx(expected.dice, abs=1e-9)
    assert case["hd95"] == pytest.approx(expected.hd95, abs=1e-9)
    assert record["summary"]["dice_mean"] == pytest.approx(expected.dice, abs=1e-9)
    assert record["summary"]["hd95_mean"] == pytest.approx(expected.hd95, abs=1e-9)

    assert ls.projects.get(id=project_id).model_version == "sugfw-unet-1"
    unet_predictions = [
        p for p in ls.predictions.list(project=project_id) if p.model_version == "sugfw-unet-1"
    ]
    assert sorted(p.task for p in unet_predictions) == unlabelled_ids
    by_task = {p.task: p for p in unet_predictions}
    # Re-ranked by the new UNet's Monte-Carlo dropout entropy (ties to the cold-start score).
    config = backend.config
    entropy = {
        t: unet_signals(
            unet,
            normalise_slice(synthetic_slice(slice_of[t]).astype(np.float32))[None],
            config.mc_passes,
            config.seed,
        ).entropy[0]
        for t in unlabelled_ids
    }
    order = sorted(unlabelled_ids, key=lambda t: (-entropy[t], cold[t].score))
    assert [by_task[t].score for t in order] == pytest.approx([0.0, 1 / 3, 2 / 3])
    assert all(by_task[t].cluster is None for t in unlabelled_ids)
    with httpx.Client(
        base_url=label_studio.url, headers=auth(label_studio), timeout=30.0
    ) as client:
        assert client.get(f"/api/projects/{project_id}/next").json()["id"] == order[0]
    prediction = by_task[unlabelled_id]
    decoded = result_to_mask(prediction.result[0])
    truth = disk_mask(slice_of[unlabelled_id])
    np.testing.assert_array_equal(decoded, unet_mask(slice_of[unlabelled_id]))
    sam = _decoded_union(cold[unlabelled_id].result, decoded.shape)
    assert not np.array_equal(decoded, sam)  # not SAM's mask
    # TRAIN_ITERATIONS steps on two disks: measured Dice 0.97 on held-out disks (0.26 after 5).
    assert dice(decoded[None], truth[None]) >= MIN_UNET_DICE
    served = httpx.post(
        f"{backend.url}/predict",
        json={"tasks": [{"id": unlabelled_id, "data": tasks[3].data}]},
        timeout=30.0,
    )
    assert served.json()["results"][0]["model_version"] == "sugfw-unet-1"
