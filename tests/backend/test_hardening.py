"""The backend against hostile input and lost state (issue 20), without a network or a model:
annotations decoded defensively, request bodies refused at the door with a 4xx naming the problem,
no admin-key fetch outside Label Studio's media paths, writes that cannot lose a job's score,
SIGTERM not taken for a crash, and bounded state."""

from __future__ import annotations

import io
import json
import logging
import os
import stat
import tracemalloc
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from backend.config import BackendConfig
from backend.jobs.queue import MAX_CRASH_STARTS, MAX_SET_ASIDE, Job, JobQueue, Progress
from backend.jobs.storage import PredictionStore
from backend.jobs.training_history import TrainingHistory, prune_runs
from backend.jobs.training_job import TrainJob
from backend.labelstudio.brush import mask_to_result, parse_label_config, result_to_mask
from backend.labelstudio.images import ImageFetcher, ImageFetchError
from backend.model import SugfwModel
from backend.server.app import create_app
from backend.server.request_checks import json_depth
from sugfw import atomic
from sugfw.cache import RecordCache
from sugfw.errors import InvalidInputError
from tests.fakes import Recorder, png_bytes

REPO = Path(__file__).resolve().parents[2]
LABEL_CONFIG = (REPO / "label_config.xml").read_text()
CONTROL = parse_label_config(LABEL_CONFIG)
LS_URL = "http://127.0.0.1:8080"
KEY = "0123456789abcdef0123456789abcdef01234567"


def png(height: int, width: int, value: int = 9) -> bytes:
    return png_bytes(np.full((height, width), value, np.uint8))


def brush_item(mask: np.ndarray) -> dict:
    (item,) = mask_to_result(mask, CONTROL)
    return item


def with_value(**changes) -> dict:
    item = brush_item(np.ones((8, 8), bool))
    item["value"] = {**item["value"], **changes}
    return item


# -- finding 1: annotations decoded defensively ----------------------------------------------------


def test_rle_header_declaring_gigabytes_is_refused_before_anything_is_allocated():
    item = brush_item(np.ones((8, 8), bool))
    # 1 GiB declared by a 5-byte stream: the SDK's decoder allocates the declared size first.
    item["value"]["rle"] = [64, 0, 0, 0, 0]
    tracemalloc.start()
    try:
        with pytest.raises(InvalidInputError, match="cannot encode|decodes to"):
            result_to_mask(item, (8, 8))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000, f"{peak} bytes allocated for a refused annotation"


@pytest.mark.parametrize(
    "item,message",
    [
        (with_value(rle=[255, 255]), "cannot encode"),
        (with_value(rle="AAAA"), "expected a list of bytes"),
        (with_value(rle=[0, 0, 1, 0, 300, 1]), "integers 0-255"),
        (with_value(rle=[0, 0, 1, 0, True, 1]), "integers 0-255"),
        (with_value(rle=[0, 0, 1, 0] + [[1]] * 8), "integers 0-255"),
        (with_value(rle=[0, 0, 1, 0, 255, 255, 255, 255]), "cannot be decoded|decodes to"),
        ({**brush_item(np.ones((8, 8), bool)), "value": [1, 2]}, "expected an object"),
        ({**brush_item(np.ones((8, 8), bool)), "original_height": -8}, "out of range"),
        ({**brush_item(np.ones((8, 8), bool)), "original_height": "8"}, "expected a number"),
        ({**brush_item(np.ones((8, 8), bool)), "original_width": 10**400}, "out of range"),
        ({**brush_item(np.ones((8, 8), bool)), "original_width": 9}, "on an image of size"),
        (
            {
                "from_name": "label",
                "type": "polygonlabels",
                "original_height": 8,
                "original_width": 8,
                "value": {"points": [[1, 2], [3], [4, 5]]},
            },
            "pairs of finite numbers",
        ),
        (
            {
                "from_name": "label",
                "type": "polygonlabels",
                "original_height": 8,
                "original_width": 8,
                "value": {"points": "1,2 3,4"},
            },
            "expected a list",
        ),
        (
            {
                "from_name": "label",
                "type": "polygonlabels",
                "original_height": 100_000,
                "original_width": 100_000,
                "value": {"points": [[1, 2], [3, 4], [5, 6]]},
            },
            "on an image of size",
        ),
        ("not an item", "expected an object"),
    ],
)
def test_malformed_result_items_are_invalid_input_naming_the_problem(item, message):
    with pytest.raises(InvalidInputError, match=message):
        result_to_mask(item, (8, 8))


def test_polygon_vertices_far_outside_are_drawn_on_the_edge():
    item = {
        "from_name": "label",
        "type": "polygonlabels",
        "original_height": 8,
        "original_width": 8,
        "value": {"points": [[-1e308, -1e308], [1e308, -1e308], [1e308, 1e308]]},
    }
    mask = result_to_mask(item, (8, 8))
    assert mask.shape == (8, 8) and mask[0, 7] and mask[7, 7]


class StaticFetcher:
    """Every task's image: a blank slice of the task's ``data.side``."""

    def fetch(self, task: dict, image_key: str) -> np.ndarray:
        side = task["data"]["side"]
        return np.full((side, side), 3.0, np.float32)

    def close(self) -> None:
        pass


def annotated(task_id: int, result, side: int = 8) -> dict:
    return {
        "id": task_id,
        "data": {"image": f"/data/upload/1/{task_id}.png", "side": side},
        "annotations": [{"id": 100 + task_id, "result": result, "updated_at": "2026-01-01"}],
    }


def test_collect_trains_on_the_valid_annotations_and_logs_each_bad_one(tmp_path, caplog):
    square = np.zeros((8, 8), bool)
    square[2:6, 2:6] = True
    hostile = [
        annotated(2, [with_value(rle=[255, 255])]),  # the live report's RLE
        annotated(3, [with_value(rle="not a list")]),
        annotated(4, [{**brush_item(square), "value": [1]}]),
        annotated(5, [{**brush_item(square), "original_height": -1}]),
        annotated(6, {"not": "a list"}),
        annotated(7, [with_value(rle=[64, 0, 0, 0, 0])]),
        annotated(8, [{**brush_item(square), "value": {"brushlabels": 5, "rle": [0]}}]),
        {"id": 9, "data": "not an object", "annotations": [{"id": 1, "result": []}]},
    ]
    valid = [annotated(1, brush_item(square) and [brush_item(square)]), annotated(10, [])]
    job = TrainJob(BackendConfig(state_dir=tmp_path), PredictionStore(tmp_path / "p"))
    progress = Progress(Job("train", "1", 0.0, 0.0, 0.0))
    with caplog.at_level(logging.WARNING, logger="backend"):
        train, test = job.collect(
            valid[:1] + hostile + valid[1:], CONTROL, StaticFetcher(), progress
        )
    assert [item.task_id for item in train] == [1, 10] and test == []
    np.testing.assert_array_equal(train[0].labels > 0, square)
    left_out = {r.getMessage().split()[1] for r in caplog.records if "left out" in r.message}
    assert left_out == {str(task["id"]) for task in hostile}


# -- findings 2 and 3: a 4xx with a reason, at the door --------------------------------------------


def box(**value) -> dict:
    return {
        "type": "rectanglelabels",
        "value": {"x": 10, "y": 10, "width": 20, "height": 20, "rotation": 0, **value},
    }


def point(x=50, y=50) -> dict:
    return {"type": "keypointlabels", "value": {"x": x, "y": y}, "is_positive": True}


def interactive(regions) -> dict:
    return {
        "tasks": [{"id": 1, "data": {"image": "/data/upload/1/a.png"}}],
        "label_config": LABEL_CONFIG,
        "params": {"context": {"result": regions}},
    }


HUGE = 10**400


@pytest.mark.parametrize(
    "path,body,status,message",
    [
        ("/predict", interactive([{**box(), "type": ["rectanglelabels"]}]), 400, "type is list"),
        ("/predict", interactive([box(x=HUGE)]), 400, "value.x is"),
        ("/predict", interactive([box(rotation=HUGE)]), 400, "value.rotation is"),
        ("/predict", interactive([point(x=HUGE)]), 400, "value.x is"),
        ("/predict", interactive([box(width=1e308)]), 400, r"value.width is 1e\+308"),
        ("/predict", interactive([point()] * 65), 400, "65 keypoints; at most 64"),
        ("/predict", interactive([{"type": "rectanglelabels", "value": "x"}]), 400, "'value'"),
        (
            "/predict",
            {**interactive([]), "params": {"context": {"result": "garbled"}}},
            400,
            "expected a list",
        ),
        (
            "/predict",
            {**interactive([]), "params": {"context": [box()]}},
            400,
            "'params.context' must be an object",
        ),
        ("/predict", {**interactive([]), "params": 0}, 400, "'params' must be an object"),
        (
            "/predict",
            {"tasks": [{"id": "13", "data": {"image": "/data/upload/1/a.png"}}]},
            400,
            r"tasks\[0\].id must be an integer",
        ),
        (
            "/predict",
            {"tasks": [{"id": "../../api/projects/1/next?x=", "data": {}}]},
            400,
            "must be an integer",
        ),
        ("/predict", {"tasks": [{"id": 2**63, "data": {}}]}, 400, "positive 64-bit"),
        ("/predict", {"tasks": [{"id": True, "data": {}}]}, 400, "must be an integer"),
        ("/predict", {"tasks": [{"id": 1, "data": ["a"]}]}, 400, r"tasks\[0\].data must be"),
        ("/predict", {"tasks": [{"id": 1}]}, 400, r"tasks\[0\].data must be"),
    ],
)
def test_malformed_predict_bodies_are_4xx_naming_the_problem(door, path, body, status, message):
    client, jobs, _ = door()
    response = client.post(path, json=body)
    assert response.status_code == status, response.get_json()
    assert pytest.importorskip("re").search(message, response.get_json()["error"])
    assert jobs.pending() == []


def test_a_valid_interactive_context_is_still_answered(door):
    client, _, model = door()
    response = client.post("/predict", json=interactive([box(), point(), point(x=-5)]))
    assert response.status_code == 200  # no scorer here: an empty prediction, not a refusal
    assert response.get_json()["results"] == [model.empty_prediction()]


@pytest.mark.parametrize("path", ["/predict", "/webhook", "/setup"])
def test_json_nested_5000_deep_is_a_400(door, path):
    client, jobs, _ = door()
    body = '{"tasks": ' + "[" * 5000 + "]" * 5000 + ', "project": 3, "action": "START_TRAINING"}'
    response = client.post(path, data=body, content_type="application/json")
    assert response.status_code == 400
    assert "nests 5001 levels deep; at most 32" in response.get_json()["error"]
    assert jobs.pending() == []


def test_json_depth_ignores_brackets_inside_strings():
    assert json_depth('{"a": "[[[{{{", "b": [1, {"c": "\\"]]"}]}') == 3
    assert json_depth("[]") == 1 and json_depth('"x"') == 0


def test_predict_task_count_is_capped(door):
    client, _, _ = door(predict_max_tasks=5)
    tasks = [{"id": i, "data": {}} for i in range(1, 7)]
    response = client.post("/predict", json={"tasks": tasks})
    assert response.status_code == 413
    assert "6 tasks; at most 5" in response.get_json()["error"]
    assert client.post("/predict", json={"tasks": tasks[:5]}).status_code == 200
    assert BackendConfig().predict_max_tasks == 10_000


# -- finding 4 (server side): who may make the backend act -----------------------------------------


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_only_a_json_content_type_is_parsed(door, content_type):
    client, jobs, _ = door()
    body = json.dumps({"action": "START_TRAINING", "project": {"id": 3}})
    response = client.post("/webhook", data=body, content_type=content_type)
    assert response.status_code == 415
    assert "expected application/json" in response.get_json()["error"]
    assert jobs.pending() == []


def test_foreign_host_header_is_refused_without_auth(door):
    client, jobs, _ = door()
    body = {"action": "START_TRAINING", "project": {"id": 3}}
    refused = client.post("/webhook", json=body, headers={"Host": "attacker.example"})
    assert refused.status_code == 421
    assert "SUGFW_ALLOWED_HOSTS" in refused.get_json()["error"]
    assert client.get("/health", headers={"Host": "attacker.example:9090"}).status_code == 421
    assert jobs.pending() == []
    for host in ("localhost:9090", "127.0.0.1:9090", "[::1]:9090", "localhost"):
        assert client.get("/health", headers={"Host": host}).status_code == 200, host


def test_listed_host_names_are_accepted_and_enforced_even_with_auth(door):
    client, _, _ = door(allowed_hosts=("sugfw-backend",))
    assert client.get("/health", headers={"Host": "sugfw-backend:9090"}).status_code == 200
    assert client.get("/health", headers={"Host": "other:9090"}).status_code == 421
    client, _, _ = door(basic_auth_user="u", basic_auth_pass="p")
    # Behind Basic auth and without a list, any name: a rebinding page has no credentials.
    assert client.get("/health", headers={"Host": "sugfw-backend:9090"}).status_code == 401


def test_webhook_of_a_project_that_never_went_through_setup_is_refused(door):
    client, jobs, _ = door()
    body = {"action": "ANNOTATION_CREATED", "project": {"id": 999999999999999999}}
    response = client.post("/webhook", json=body)
    assert response.status_code == 403
    assert "not connected" in response.get_json()["error"]
    assert jobs.pending() == []
    # /setup connects it (no Label Studio configured here: the access check only logs).
    assert client.post("/setup", json={"project": "999999999999999999.17"}).status_code == 200
    assert client.post("/webhook", json=body).status_code == 200
    assert ("train", "999999999999999999") in [(j.kind, j.project) for j in jobs.pending()]


def test_webhook_of_any_project_when_told_to(door):
    client, jobs, _ = door(webhook_any_project=True)
    body = {"action": "ANNOTATION_CREATED", "project": {"id": 41}}
    assert client.post("/webhook", json=body).status_code == 200


def run_record() -> dict:
    return {
        "model_version": "sugfw-unet-1",
        "annotations": 3,
        "validation": {"cases": 1, "case_ids": ["patient-007"], "best_dice": 0.5},
        "cases": [{"case_id": "patient-008", "dice": 0.7, "hd95": 3.0}],
        "summary": None,
    }


def failing_job(job, progress):
    raise RuntimeError("HTTP 500 headers: {'set-cookie': 'sessionid=abc'} body: <html>secret")


@pytest.mark.parametrize("detail", [False, True])
def test_metrics_show_case_ids_and_upstream_errors_only_when_asked(tmp_path, detail):
    config = BackendConfig(state_dir=tmp_path / "state", metrics_detail=detail)
    TrainingHistory(config.state_dir).append(3, run_record())
    now = [0.0]
    jobs = JobQueue(config.state_dir, {"train": failing_job}, debounce_s=0.0, clock=lambda: now[0])
    jobs.submit("train", 3)
    jobs.run_due()
    client = create_app(config, SugfwModel(config), jobs).test_client()
    text = client.get("/metrics").get_data(as_text=True)
    for secret in ("patient-007", "patient-008", "sessionid", "secret"):
        assert (secret in text) is detail, secret
    metrics = json.loads(text)
    assert metrics["jobs"]["last_error"].startswith("train job for project 3: RuntimeError")
    assert metrics["training"]["3"][0]["cases"][0]["dice"] == 0.7


# -- finding 5: the admin key only on Label Studio's media paths -----------------------------------


def fetcher(recorder: Recorder) -> ImageFetcher:
    return ImageFetcher(
        LS_URL,
        lambda: {"Authorization": f"Token {KEY}"},
        transport=recorder.transport,
        resolver=lambda host, port: ["93.184.216.34"],
    )


@pytest.mark.parametrize(
    "task_id,url",
    [
        (1, f"{LS_URL}/api/projects/1/next"),
        (1, "/api/projects/1/next"),
        (1, "/data/upload/../../api/projects/1/next"),
        (1, "/data/upload/%2e%2e/%2e%2e/api/projects/1/next"),
        (1, f"{LS_URL}/data/upload/..%2f..%2fapi/projects/1/next"),
        (1, "/user/logout"),
        ("../../api/projects/1/next?x=", "s3://bucket/a.png"),
        (True, "s3://bucket/a.png"),
    ],
)
def test_admin_key_fetches_nothing_but_media_and_sends_nothing(task_id, url):
    recorder = Recorder()
    with pytest.raises(ImageFetchError, match="media paths|not a positive integer"):
        fetcher(recorder).fetch({"id": task_id, "data": {"image": url}}, "image")
    assert recorder.seen == []


def test_redirect_from_media_to_the_api_is_refused_before_it_is_followed():
    upload = f"{LS_URL}/data/upload/1/a.png"
    recorder = Recorder({upload: httpx.Response(302, headers={"Location": "/api/projects/1/next"})})
    with pytest.raises(ImageFetchError, match="media paths"):
        fetcher(recorder).fetch({"id": 1, "data": {"image": upload}}, "image")
    assert recorder.seen == [upload]


def test_media_paths_are_still_fetched():
    content = png(8, 8)
    presign = f"{LS_URL}/tasks/5/presign/?fileuri=czM6Ly9iL2EucG5n"
    recorder = Recorder(
        {
            f"{LS_URL}/data/upload/1/a.png": httpx.Response(200, content=content),
            f"{LS_URL}/storage-data/uploaded/?filepath=x.png": httpx.Response(200, content=content),
            f"{LS_URL}/data/local-files/?d=a.png": httpx.Response(200, content=content),
            presign: httpx.Response(200, content=content),
        }
    )
    for task_id, url in (
        (1, "/data/upload/1/a.png"),
        (1, "upload/1/a.png"),
        (1, f"{LS_URL}/data/local-files/?d=a.png"),
        (5, "s3://b/a.png"),
    ):
        image = fetcher(recorder).fetch({"id": task_id, "data": {"image": url}}, "image")
        assert image.shape == (8, 8), url


@pytest.mark.parametrize(
    "content,message",
    [
        (png(8, 5000), "sides more than 32 times apart"),
        (png(5000, 8), "sides more than 32 times apart"),
        (b"GIF89a" + bytes(20), "not a PNG, JPEG, TIFF image"),
    ],
)
def test_images_no_slice_can_be_are_refused(content, message):
    url = f"{LS_URL}/data/upload/1/a.png"
    recorder = Recorder({url: httpx.Response(200, content=content)})
    with pytest.raises(ImageFetchError, match=message):
        fetcher(recorder).fetch({"id": 1, "data": {"image": url}}, "image")


def gif(height: int, width: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((height, width), np.uint8)).save(buffer, format="GIF")
    return buffer.getvalue()


def test_a_real_gif_is_refused_as_a_format_no_slice_is_stored_in():
    url = f"{LS_URL}/data/upload/1/a.gif"
    recorder = Recorder({url: httpx.Response(200, content=gif(8, 8))})
    with pytest.raises(ImageFetchError, match="not a PNG, JPEG, TIFF image"):
        fetcher(recorder).fetch({"id": 1, "data": {"image": url}}, "image")


# -- finding 6: writes that cannot lose or duplicate -----------------------------------------------


def make_record(slice_id: str, image_hash: str = "h", side: int = 8):
    from sugfw.records import SliceRecord

    union = np.zeros((side, side), bool)
    union[1:3, 1:3] = True
    return SliceRecord(
        slice_id=slice_id,
        content_hash=image_hash,
        features_pgdr=np.zeros(256, np.float32),
        features_mean=np.zeros(256, np.float32),
        uncertainty=0.5,
        union_mask=union,
        uncertainty_map=np.zeros((side, side), np.float16),
        masks_kept=1,
    )


class RacingScorer:
    """Scores a slice; meanwhile (as if this /predict had waited on the scorer lock while the
    scoring job ran) the job stores its scored prediction of the same task."""

    JOB_ENTRY = {"result": [], "score": 0.25, "model_version": "sugfw-litemedsam-b1"}

    def __init__(self, store: PredictionStore, task_id: int) -> None:
        self.store, self.task_id = store, task_id

    def score(self, image, slice_id):
        self.store.put(self.task_id, self.JOB_ENTRY)
        return make_record(slice_id, side=image.shape[0])


class KnownTasks(SugfwModel):
    def task_known(self, task_id, image_key, image_url):
        return True


def test_on_demand_prediction_keeps_the_score_the_job_stored_meanwhile(tmp_path):
    config = BackendConfig(state_dir=tmp_path / "state")
    store = PredictionStore(config.state_dir / "predictions")
    model = KnownTasks(
        config, predictions=store, scorer=RacingScorer(store, 7), fetcher=StaticFetcher
    )
    task = {"id": 7, "data": {"image": "/data/upload/1/7.png", "side": 8}}
    (answer,) = model.predict([task], label_config=LABEL_CONFIG)
    assert store.get(7) == RacingScorer.JOB_ENTRY  # the job's score survives
    assert answer == RacingScorer.JOB_ENTRY
    # Without a race the on-demand answer is stored, with no score.
    other = KnownTasks(
        config, predictions=store, scorer=RacingScorer(store, 99), fetcher=StaticFetcher
    )
    (fresh,) = other.predict([{**task, "id": 8}], label_config=LABEL_CONFIG)
    assert fresh["score"] is None and store.get(8) == fresh


def test_an_expired_key_on_the_on_demand_path_is_an_empty_prediction_not_a_500(tmp_path):
    from backend.labelstudio.images import ImageFetchError as FetchError

    def expired():
        raise FetchError("LABEL_STUDIO_API_KEY is not usable: the API key has expired")

    config = BackendConfig(state_dir=tmp_path / "state")
    model = KnownTasks(
        config, scorer=RacingScorer(PredictionStore(tmp_path / "p"), 1), fetcher=expired
    )
    task = {"id": 7, "data": {"image": "/data/upload/1/7.png", "side": 8}}
    assert model.predict([task], label_config=LABEL_CONFIG) == [model.empty_prediction()]
    # The interactive path makes its fetcher the same way.
    context = {"result": [box()]}
    answer = model.predict([task], context=context, label_config=LABEL_CONFIG)
    assert answer == [model.empty_prediction()]


def test_concurrent_put_if_absent_has_exactly_one_winner(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    store = PredictionStore(tmp_path)
    with ThreadPoolExecutor(8) as pool:
        wins = list(pool.map(lambda i: store.put_if_absent(1, {"writer": i}), range(32)))
    assert wins.count(True) == 1
    assert store.get(1) == {"writer": wins.index(True)}
    assert [p.name for p in tmp_path.iterdir()] == ["1.json"]  # no temporary file left


def test_atomic_writes_flush_the_folder(tmp_path, monkeypatch):
    synced: list[bool] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append(stat.S_ISDIR(os.fstat(fd).st_mode))
        real_fsync(fd)

    monkeypatch.setattr(atomic.os, "fsync", recording_fsync)
    atomic.atomic_write_json(tmp_path / "a.json", {"a": 1})
    assert synced == [False, True]  # the file, then its folder (the rename)
    synced.clear()
    assert atomic.atomic_create_json(tmp_path / "b.json", {"b": 1})
    assert synced[-1] is True


def blocking_handler(started, release):
    def handle(job, progress):
        started.set()
        release.wait(10)

    return handle


def test_an_interrupted_job_is_run_again_and_never_set_aside(tmp_path):
    import threading

    for _ in range(MAX_CRASH_STARTS + 1):  # more orderly stops than crashes allowed
        started, release = threading.Event(), threading.Event()
        jobs = JobQueue(tmp_path, {"train": blocking_handler(started, release)}, debounce_s=0.0)
        if not jobs.pending():
            jobs.submit("train", 3)
        jobs.start()
        assert started.wait(10)
        jobs.interrupt()  # what SIGTERM does, through the exit handler
        release.set()
        jobs.stop()
        state = json.loads((tmp_path / "jobs.json").read_text())
        if state["pending"]:
            assert state["pending"][0]["starts"] == 0
    restored = JobQueue(tmp_path, {}, debounce_s=0.0)
    assert restored.snapshot()["set_aside"] == []


def test_crashes_still_set_a_job_aside_and_setup_revives_it(tmp_path, door):
    state = tmp_path / "state"
    state.mkdir()
    (state / "jobs.json").write_text(
        json.dumps({"pending": [{"kind": "score", "project": "3", "starts": MAX_CRASH_STARTS}]})
    )
    client, jobs, _ = door()
    assert [entry["project"] for entry in jobs.snapshot()["set_aside"]] == ["3"]
    assert client.post("/setup", json={"project": "3.17"}).status_code == 200
    assert jobs.snapshot()["set_aside"] == []
    assert [(job.kind, job.project) for job in jobs.pending()] == [("score", "3")]


# -- finding 7: bounded state ----------------------------------------------------------------------


def test_predictions_past_the_retention_are_deleted(tmp_path):
    store = PredictionStore(tmp_path)
    for task_id in (1, 2, 3):
        store.put(task_id, {"result": []})
    old = 1_000_000.0
    os.utime(tmp_path / "1.json", (old, old))
    assert store.prune(max_age_s=86400.0) == 1
    assert store.get(1) is None and store.get(2) is not None
    assert store.prune(max_age_s=0) == 0  # 0: kept for ever


def test_score_cache_keeps_the_most_recently_used_entries(tmp_path, textured_slice):
    from sugfw.records import content_hash

    cache = RecordCache(tmp_path, {"s": 1}, max_entries=10)
    records = []
    for seed in range(10):
        image = textured_slice(8, 8, seed)
        records.append(_record(content_hash(image)))
        cache.put(records[-1])
        os.utime(cache._path(records[-1].content_hash), (1000 + seed, 1000 + seed))
    assert cache.get(records[0].content_hash) is not None  # used again: now the most recent
    cache.put(_record("f" * 16))  # the 11th entry: the least recently used tenth goes
    assert len(cache) == 9
    assert cache.get(records[0].content_hash) is not None
    assert cache.get(records[1].content_hash) is None
    assert cache.get(records[2].content_hash) is None


def _record(image_hash: str):
    from sugfw.records import SliceRecord, pack_regions

    masks = np.zeros((1, 8, 8), bool)
    return SliceRecord(
        slice_id="s",
        content_hash=image_hash,
        uncertainty=0.1,
        masks_kept=1,
        union_mask=masks[0],
        region_bits=pack_regions(masks),
        **_other_fields(),
    )


def _other_fields() -> dict:
    import dataclasses

    from sugfw.records import SliceRecord

    given = {"slice_id", "content_hash", "uncertainty", "masks_kept", "union_mask", "region_bits"}
    fields = {}
    for field in dataclasses.fields(SliceRecord):
        if field.name in given or field.default is not dataclasses.MISSING:
            continue
        fields[field.name] = np.zeros(4, np.float32)
    return fields


def test_checkpoints_of_the_best_and_the_last_runs_are_kept(tmp_path):
    project = tmp_path / "training" / "3"
    dice = [0.2, 0.9, 0.3, 0.4, 0.5, 0.6]
    records = [{"summary": {"dice_mean": value}} for value in dice]
    for run in range(1, 7):
        (project / f"run-{run}").mkdir(parents=True)
        (project / f"run-{run}" / "best.pt").write_bytes(b"x")
    prune_runs(project, records, keep_last=3)
    assert sorted(p.name for p in project.iterdir()) == ["run-2", "run-4", "run-5", "run-6"]


def test_training_history_prunes_on_append(tmp_path):
    history = TrainingHistory(tmp_path, keep_last_runs=1)
    for run in range(1, 4):
        (history.project_dir(3) / f"run-{run}").mkdir(parents=True)
        history.append(3, {"validation": {"best_dice": 0.1 * run}})
    assert sorted(p.name for p in history.project_dir(3).glob("run-*")) == ["run-3"]


def test_set_aside_jobs_are_capped(tmp_path):
    entries = [{"kind": "train", "project": str(i), "starts": MAX_CRASH_STARTS} for i in range(150)]
    (tmp_path / "jobs.json").write_text(json.dumps({"pending": entries}))
    jobs = JobQueue(tmp_path, {}, debounce_s=0.0)
    jobs.submit("score", 1)
    saved = json.loads((tmp_path / "jobs.json").read_text())
    assert len(saved["set_aside"]) == MAX_SET_ASIDE


class ChokingScorer:
    """Fails on the first slice as a model can (a RuntimeError, not a SugfwError)."""

    def __init__(self) -> None:
        self.calls = 0

    def score(self, image, slice_id):
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError("input and output sizes should be greater than 0")
        return make_record(slice_id, side=image.shape[0])


def test_a_slice_the_model_chokes_on_costs_only_its_own_task(tmp_path):
    config = BackendConfig(state_dir=tmp_path / "state")
    model = KnownTasks(config, scorer=ChokingScorer(), fetcher=StaticFetcher)
    tasks = [{"id": i, "data": {"image": f"/data/upload/1/{i}.png", "side": 8}} for i in (1, 2)]
    first, second = model.predict(tasks, label_config=LABEL_CONFIG)
    assert first == model.empty_prediction()
    assert second["result"] and model.predictions.get(2) == second


def test_a_job_failing_while_the_process_stops_waits_for_the_restart(tmp_path):
    import threading

    started, stop_seen = threading.Event(), threading.Event()

    def handler(job, progress):
        started.set()
        stop_seen.wait(10)
        raise ConnectionError("connection closed by the shutdown")

    jobs = JobQueue(tmp_path, {"train": handler}, debounce_s=0.0)
    jobs.submit("train", 3)
    jobs.start()
    assert started.wait(10)
    jobs.interrupt()
    stop_seen.set()
    jobs.stop()
    (job,) = json.loads((tmp_path / "jobs.json").read_text())["pending"]
    assert (job["kind"], job["project"], job["starts"]) == ("train", "3", 0)
    assert jobs.snapshot()["failed"] == 0
