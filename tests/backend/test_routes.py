"""Label Studio ML backend: routes, auth, job queue, image fetching, brush masks. No network, no
model."""

from __future__ import annotations

import base64
import io
import json
import logging
import time
from pathlib import Path

import httpx
import jwt
import numpy as np
import pytest
from PIL import Image

from backend.config import BackendConfig
from backend.jobs.connected import ConnectedProjects
from backend.jobs.queue import JobQueue
from backend.labelstudio.annotations import annotation_label_map
from backend.labelstudio.brush import (
    LabelConfigError,
    mask_to_result,
    parse_label_config,
    result_to_mask,
)
from backend.labelstudio.connection import label_studio_auth
from backend.labelstudio.images import ImageFetcher, ImageFetchError
from backend.model import SugfwModel
from backend.redact import redact
from backend.server.app import create_app
from sugfw.errors import InvalidInputError

REPO = Path(__file__).resolve().parents[2]
USER, PASSWORD = "annotator", "s3cret pass"
LS_URL = "http://ls.test:8080"
LEGACY_KEY = "0123456789abcdef0123456789abcdef01234567"
JWT_KEY = "signing-key-of-the-fake-server-0123456789"
CONNECTED = (1, 2, 3, 4, 5, 7, 9)


def PUBLIC(host: str, port: int) -> list[str]:
    """Resolver for the fake image hosts: a public address (tests/test_backend_exposure.py
    covers the refused ones)."""
    return ["93.184.216.34"]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_client(tmp_path, clock):
    """Test client over an app whose job worker is not started (tests drive the queue by hand)."""

    def make(auth: bool = False):
        config = BackendConfig(
            state_dir=tmp_path / "state",
            basic_auth_user=USER if auth else None,
            basic_auth_pass=PASSWORD if auth else None,
        )
        jobs = JobQueue(config.state_dir, debounce_s=5.0, clock=clock)
        model = SugfwModel(config)
        for project in CONNECTED:  # as if /setup had run: webhooks of other projects are refused
            ConnectedProjects(config.state_dir).add(project)
        return create_app(config, model, jobs).test_client(), jobs, model

    return make


# -- routes -------------------------------------------------------------------------------------

BRUSH_CONFIG = (REPO / "label_config.xml").read_text()  # /setup refuses schemas without a brush

ROUTES = [
    ("GET", "/", None),
    ("GET", "/health", None),
    ("POST", "/setup", {"project": "3.1700000000", "schema": BRUSH_CONFIG}),
    ("POST", "/predict", {"tasks": [{"id": 1, "data": {}}], "project": "3.1700000000"}),
    ("POST", "/webhook", {"action": "ANNOTATION_CREATED", "project": {"id": 3}}),
    ("GET", "/metrics", None),
    ("GET", "/versions", None),
]
# Routes whose success needs state (a training run): only their protection is checked here.
STATEFUL_ROUTES = [("GET", "/metrics/plot", None)]


@pytest.mark.parametrize("method,path,body", ROUTES)
def test_every_route_answers_without_auth_configured(make_client, method, path, body):
    client, _, _ = make_client(auth=False)
    response = client.open(path, method=method, json=body)
    assert response.status_code == 200, response.get_json()


@pytest.mark.parametrize("method,path,body", ROUTES + STATEFUL_ROUTES)
@pytest.mark.parametrize(
    "headers",
    [
        {},
        basic(USER, "wrong"),
        basic("intruder", PASSWORD),
        basic(USER, PASSWORD + "x"),
        {"Authorization": "Basic !!!"},
        {"Authorization": f"Token {PASSWORD}"},
    ],
    ids=["missing", "wrong-pass", "wrong-user", "longer-pass", "garbled", "not-basic"],
)
def test_every_route_rejects_wrong_credentials(make_client, method, path, body, headers):
    client, jobs, _ = make_client(auth=True)
    response = client.open(path, method=method, json=body, headers=headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith('Basic realm="sugfw"')
    assert jobs.pending() == []  # a rejected webhook or setup queues nothing


@pytest.mark.parametrize("method,path,body", ROUTES)
def test_every_route_accepts_right_credentials(make_client, method, path, body):
    client, _, _ = make_client(auth=True)
    response = client.open(path, method=method, json=body, headers=basic(USER, PASSWORD))
    assert response.status_code == 200, response.get_json()


def test_health_and_setup_contract(make_client):
    client, jobs, model = make_client()
    assert client.get("/health").get_json() == {
        "status": "UP",
        "model_class": "SugfwModel",
        "model_version": "sugfw-litemedsam",
    }
    answer = client.post(
        "/setup", json={"project": "12.1712345678", "schema": BRUSH_CONFIG, "access_token": "x"}
    )
    assert answer.get_json() == {"model_version": "sugfw-litemedsam"}
    # Connecting a project queues its scoring, keyed by the id without the timestamp.
    assert [(job.kind, job.project) for job in jobs.pending()] == [("score", "12")]


def test_predict_returns_one_prediction_per_task_in_order_with_cached_ones(make_client):
    client, _, model = make_client()
    cached = {
        "result": [{"from_name": "label", "type": "brushlabels", "value": {"rle": [1, 2, 3]}}],
        "score": 0.25,
        "model_version": "sugfw-litemedsam",
        "cluster": 4,
    }
    model.predictions.put(22, cached)
    tasks = [
        {"id": 21, "data": {"image": "a"}},
        {"id": 22, "data": {"image": "b"}},
        {"id": 23, "data": {"image": "c"}},
    ]
    results = client.post(
        "/predict",
        json={
            "tasks": tasks,
            "project": "1.1",
            "label_config": "<View/>",
            "params": {"context": None},
        },
    ).get_json()["results"]
    empty = {"result": [], "score": None, "model_version": "sugfw-litemedsam"}
    assert results == [empty, cached, empty]


def test_predict_of_no_tasks_is_an_empty_list(make_client):
    client, _, _ = make_client()
    assert client.post("/predict", json={"tasks": []}).get_json() == {"results": []}


def test_burst_of_fifty_annotation_events_becomes_one_train_job(make_client, clock):
    client, jobs, _ = make_client()
    actions = [
        "ANNOTATION_CREATED",
        "ANNOTATION_UPDATED",
        "ANNOTATIONS_DELETED",
        "START_TRAINING",
        "ANNOTATION_CREATED",
    ]
    statuses = []
    for i in range(50):
        clock.now += 0.1
        payload = {
            "action": actions[i % 5],
            "project": {"id": 7, "title": "LA"},
            "annotation": {"id": i},
            "task": {"id": i},
        }
        statuses.append(client.post("/webhook", json=payload).get_json()["status"])
    pending = jobs.pending()
    assert [(job.kind, job.project, job.events) for job in pending] == [("train", "7", 50)]
    assert statuses == ["queued"] + ["merged"] * 49
    # Debounced from the last event: 1000 + 50 × 0.1 + 5 s.
    assert pending[0].due == pytest.approx(1010.0)


def test_events_for_another_project_queue_their_own_job(make_client):
    client, jobs, _ = make_client()
    client.post("/webhook", json={"action": "ANNOTATION_CREATED", "project": {"id": 1}})
    client.post("/webhook", json={"action": "ANNOTATION_CREATED", "project": {"id": 2}})
    client.post("/webhook", json={"action": "TASKS_CREATED", "project": {"id": 1}})
    assert sorted((job.kind, job.project) for job in jobs.pending()) == [
        ("score", "1"),
        ("train", "1"),
        ("train", "2"),
    ]


def test_unknown_event_is_acknowledged_ignored_and_logged(make_client, caplog):
    client, jobs, _ = make_client()
    with caplog.at_level(logging.INFO, logger="backend"):
        response = client.post("/webhook", json={"action": "PROJECT_UPDATED", "project": {"id": 3}})
    assert response.status_code == 200
    assert response.get_json() == {"status": "ignored", "action": "PROJECT_UPDATED"}
    assert jobs.pending() == []
    assert "ignored webhook action PROJECT_UPDATED" in caplog.text


@pytest.mark.parametrize(
    "path,data,message",
    [
        ("/predict", b"{not json", "not valid JSON"),
        ("/predict", b"[1, 2]", "is JSON list"),
        ("/predict", json.dumps({"project": "1"}), "missing key 'tasks'"),
        ("/predict", json.dumps({"tasks": {"id": 1}}), "key 'tasks' must be list"),
        ("/predict", json.dumps({"tasks": [1, 2]}), "list of task objects"),
        ("/predict", json.dumps({"tasks": [], "params": "x"}), "'params' must be an object"),
        ("/setup", b"", "not valid JSON"),
        ("/setup", json.dumps({"schema": "<View/>"}), "missing key 'project'"),
        ("/webhook", json.dumps({"project": {"id": 3}}), "missing key 'action'"),
        ("/webhook", json.dumps({"action": 5}), "key 'action' must be str"),
        ("/webhook", json.dumps({"action": "ANNOTATION_CREATED"}), "no project id"),
        (
            "/webhook",
            json.dumps({"action": "ANNOTATION_CREATED", "project": {"title": "x"}}),
            "no project id",
        ),
    ],
)
def test_malformed_body_is_a_400_naming_the_problem(make_client, path, data, message):
    client, jobs, _ = make_client()
    response = client.post(path, data=data, content_type="application/json")
    assert response.status_code == 400
    assert message in response.get_json()["error"]
    assert "Traceback" not in response.get_data(as_text=True)
    assert jobs.pending() == []


def test_unexpected_failure_is_a_500_without_traceback(make_client, monkeypatch):
    client, _, model = make_client()

    def broken(*args, **kwargs):
        raise KeyError("internal detail")

    monkeypatch.setattr(model, "predict", broken)
    response = client.post("/predict", json={"tasks": []})
    assert response.status_code == 500
    assert response.get_json() == {"error": "internal error (KeyError); see the backend log"}


def test_secrets_in_payloads_never_reach_the_logs(make_client, caplog):
    client, _, _ = make_client(auth=True)
    secrets = [
        "ls-project-token-1f2e",
        "setup-access-token-9a8b",
        "nested-api-key-77",
        "webhook-secret-42",
    ]
    headers = basic(USER, PASSWORD)
    with caplog.at_level(logging.DEBUG):
        client.post(
            "/webhook",
            headers=headers,
            json={
                "action": "ANNOTATION_CREATED",
                "project": {"id": 5, "token": secrets[0], "created_by": {"api_key": secrets[2]}},
                "annotation": {"id": 1, "result": [{"meta": {"Webhook_Secret": secrets[3]}}]},
            },
        )
        client.post(
            "/setup",
            headers=headers,
            json={"project": "5.1", "schema": "<View/>", "access_token": secrets[1]},
        )
        client.post(
            "/predict",
            headers=headers,
            json={"tasks": [], "project": "5.1", "params": {"token": secrets[0]}},
        )
        client.post(
            "/webhook", headers=basic(USER, "wrong"), json={"action": "X", "token": secrets[0]}
        )
    assert "webhook body (redacted)" in caplog.text  # the bodies were logged, redacted
    for secret in secrets + [PASSWORD]:
        assert secret not in caplog.text
        assert all(secret not in str(record.args) for record in caplog.records)


def test_redact_masks_secret_keys_at_any_depth_and_keeps_the_rest():
    payload = {
        "id": 1,
        "Authorization": "Token x",
        "items": [{"password": "p", "name": "n"}],
        "meta": {"refresh_token": "r", "n": 2},
    }
    assert redact(payload) == {
        "id": 1,
        "Authorization": "***",
        "items": [{"password": "***", "name": "n"}],
        "meta": {"refresh_token": "***", "n": 2},
    }
    assert payload["items"][0]["password"] == "p"  # the original is untouched


@pytest.mark.parametrize(
    "url,host,query",
    [
        (f"https://annotator:{PASSWORD}@ls.test/data/upload/1/a.png", "***@ls.test", {}),
        (f"https://ls.test/a.png?token={LEGACY_KEY}&d=x", "ls.test", {"token": "***", "d": "x"}),
        (
            f"https://s3.test/b.png?X-Amz-Date=1&X-Api-Key={LEGACY_KEY}",
            "s3.test",
            {"X-Amz-Date": "1", "X-Api-Key": "***"},
        ),
        (
            f"https://u:{PASSWORD}@evil.test@ls.test/?access_token={LEGACY_KEY}",
            "***@ls.test",
            {"access_token": "***"},
        ),
    ],
    ids=["userinfo", "token-query", "api-key-query", "two-at-signs"],
)
def test_redact_url_removes_the_secret_and_keeps_the_rest(url, host, query):
    from urllib.parse import parse_qsl, quote, quote_plus, urlsplit

    from backend.redact import redact_url

    redacted = redact_url(url)
    for secret in (LEGACY_KEY, PASSWORD, quote(PASSWORD), quote_plus(PASSWORD)):
        assert secret not in redacted
    parts = urlsplit(redacted)
    assert parts.netloc == host
    assert dict(parse_qsl(parts.query)) == query


def test_download_error_message_carries_no_secret_of_the_url():
    url = f"https://annotator:{PASSWORD}@images.test/a.png?api_key={LEGACY_KEY}"
    transport = mock_label_studio({}, [])  # every URL answers 404
    fetcher = ImageFetcher(
        LS_URL,
        lambda: {"Authorization": f"Token {LEGACY_KEY}"},
        transport=transport,
        allowed_hosts=["images.test"],
        resolver=PUBLIC,
    )
    with pytest.raises(ImageFetchError, match="not found") as caught:
        fetcher.fetch({"id": 3, "data": {"image": url}}, "image")
    assert LEGACY_KEY not in str(caught.value) and PASSWORD not in str(caught.value)
    assert "images.test/a.png" in str(caught.value)


def test_metrics_expose_the_running_jobs_progress(make_client, clock):
    client, jobs, _ = make_client()
    seen = {}

    def train(job, progress):
        progress.update(3, 10)
        seen["metrics"] = client.get("/metrics").get_json()["jobs"]

    jobs.handlers["train"] = train
    client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 9}})
    clock.now += 5.0
    assert jobs.run_due() == 1
    running = seen["metrics"]["running"]
    assert (running["job"], running["project"], running["done"], running["total"]) == (
        "train",
        "9",
        3,
        10,
    )
    assert running["started"] == pytest.approx(time.time(), abs=60)
    after = client.get("/metrics").get_json()["jobs"]
    assert (after["running"], after["pending"], after["completed"], after["failed"]) == (
        None,
        [],
        1,
        0,
    )


# -- job queue ----------------------------------------------------------------------------------


def test_job_waits_for_a_quiet_debounce_interval(tmp_path, clock):
    runs = []
    jobs = JobQueue(
        tmp_path,
        {"train": lambda job, progress: runs.append(job.events)},
        debounce_s=5.0,
        clock=clock,
    )
    jobs.submit("train", 1)  # t = 1000 → due 1005
    clock.now = 1004.0
    jobs.submit("train", 1)  # → due 1009
    clock.now = 1008.9
    assert jobs.run_due() == 0
    clock.now = 1009.0
    assert jobs.run_due() == 1
    assert runs == [2]
    assert jobs.pending() == []


def test_steady_stream_of_events_still_runs_by_the_cap(tmp_path, clock):
    runs = []
    jobs = JobQueue(
        tmp_path,
        {"train": lambda job, progress: runs.append(clock.now)},
        debounce_s=5.0,
        max_delay_s=20.0,
        clock=clock,
    )
    # An event every 4 s would push a plain debounce forever; the cap is created + 20 = 1020.
    for step in range(11):
        clock.now = 1000.0 + 4 * step
        jobs.submit("train", 1)
        jobs.run_due()
    assert runs == [1020.0]


def test_event_during_a_run_queues_a_fresh_job(tmp_path, clock):
    jobs = JobQueue(tmp_path, debounce_s=0.0, clock=clock)
    runs = []

    def train(job, progress):
        runs.append(job.events)
        if len(runs) == 1:
            assert jobs.submit("train", 1) is True  # the running job started from older data

    jobs.handlers["train"] = train
    jobs.submit("train", 1)
    assert jobs.run_due() == 2
    assert runs == [1, 1]


def test_failed_job_is_counted_and_the_queue_goes_on(tmp_path, clock):
    jobs = JobQueue(tmp_path, debounce_s=0.0, clock=clock)
    done = []
    jobs.handlers = {
        "train": lambda job, progress: 1 / 0,
        "score": lambda job, progress: done.append(job.project),
    }
    jobs.submit("train", 1)
    jobs.submit("score", 2)
    assert jobs.run_due() == 2
    snapshot = jobs.snapshot()
    assert (snapshot["completed"], snapshot["failed"], done) == (1, 1, ["2"])
    assert snapshot["last_error"] == "train job for project 1: ZeroDivisionError: division by zero"


def test_unknown_job_kind_is_refused(tmp_path):
    with pytest.raises(ValueError, match="job kind 'predict' is unknown"):
        JobQueue(tmp_path).submit("predict", 1)


def test_pending_jobs_survive_a_restart(tmp_path, clock):
    JobQueue(tmp_path, clock=clock).submit("train", 3)
    first = JobQueue(tmp_path, clock=clock)
    first.submit("score", 4)
    for _ in range(5):
        first.submit("train", 3)
    restarted = JobQueue(tmp_path, debounce_s=5.0, clock=clock)
    # The merged events count too: six events behind the train job, one behind the score job.
    assert sorted((job.kind, job.project, job.events) for job in restarted.pending()) == [
        ("score", "4", 1),
        ("train", "3", 6),
    ]
    state = json.loads((tmp_path / "jobs.json").read_text())
    assert sorted(
        (entry["kind"], entry["project"], entry["events"]) for entry in state["pending"]
    ) == [("score", "4", 1), ("train", "3", 6)]


def test_job_interrupted_by_a_restart_is_queued_again(tmp_path, clock):
    seen = {}

    def train(job, progress):
        # What a process started now (after a crash mid-job) would find on disk.
        seen["pending"] = [(j.kind, j.project) for j in JobQueue(tmp_path, clock=clock).pending()]

    jobs = JobQueue(tmp_path, {"train": train}, debounce_s=0.0, clock=clock)
    jobs.submit("train", 8)
    jobs.run_due()
    assert seen["pending"] == [("train", "8")]
    assert JobQueue(tmp_path, clock=clock).pending() == []  # finished → gone from the state file


def test_malformed_entries_in_the_state_file_are_skipped_and_the_rest_restored(tmp_path, caplog):
    entries = [
        {"kind": "train", "project": "3", "first_event": 12.5, "events": 4},  # good
        {"project": "5"},  # no kind
        {"kind": "score"},  # no project
        {"kind": "train", "project": "6", "events": "many"},  # events not a number
        {"kind": "train", "project": "7", "first_event": [1]},  # first_event not a number
        {"kind": "predict", "project": "8"},  # unknown kind
        "score 9",  # not an object at all
        None,
        {"kind": "score", "project": 10},  # good: a numeric project id is read as its string
    ]
    (tmp_path / "jobs.json").write_text(json.dumps({"version": 1, "pending": entries}))
    with caplog.at_level(logging.WARNING):
        restored = JobQueue(tmp_path).pending()
    assert sorted((job.kind, job.project, job.events) for job in restored) == [
        ("score", "10", 1),
        ("train", "3", 4),
    ]
    assert next(job for job in restored if job.project == "3").first_event == 12.5
    assert caplog.text.count("skipping malformed job entry") == 6
    assert "skipping job of unknown kind 'predict'" in caplog.text


@pytest.mark.parametrize(
    "payload", [[], "pending", {"pending": "train 3"}, {"pending": {"kind": "train"}}]
)
def test_state_file_of_the_wrong_shape_restores_nothing(tmp_path, payload):
    (tmp_path / "jobs.json").write_text(json.dumps(payload))
    jobs = JobQueue(tmp_path)
    assert jobs.pending() == []
    assert jobs.submit("train", 1)  # and the queue still works


def test_corrupt_state_file_is_ignored(tmp_path, caplog):
    (tmp_path / "jobs.json").write_text("{half a json")
    with caplog.at_level(logging.WARNING):
        assert JobQueue(tmp_path).pending() == []
    assert "unreadable state file" in caplog.text


def test_worker_thread_runs_a_due_job(tmp_path):
    import threading

    ran = threading.Event()
    jobs = JobQueue(tmp_path, {"score": lambda job, progress: ran.set()}, debounce_s=0.01)
    jobs.start()
    try:
        jobs.submit("score", 1)
        assert ran.wait(timeout=5)
    finally:
        jobs.stop()
    assert jobs.snapshot()["worker_alive"] is False


# -- images -------------------------------------------------------------------------------------


def test_local_file_is_read_from_the_document_root(tmp_path):
    root = tmp_path / "root"
    (root / "case1").mkdir(parents=True)
    pixels = np.arange(12 * 10, dtype=np.uint8).reshape(12, 10)
    (root / "case1" / "slice 0.png").write_bytes(png_bytes(pixels))
    fetcher = ImageFetcher(local_files_root=root)
    task = {"id": 5, "data": {"image": "/data/local-files/?d=case1/slice%200.png"}}
    np.testing.assert_array_equal(fetcher.fetch(task, "image"), pixels.astype(np.float32))


@pytest.mark.parametrize(
    "relative", ["../outside.png", "case1/../../outside.png", "/../outside.png", "link/outside.png"]
)
def test_local_files_path_escaping_the_root_is_refused(tmp_path, relative):
    root = tmp_path / "root"
    (root / "case1").mkdir(parents=True)
    (tmp_path / "outside.png").write_bytes(png_bytes(np.zeros((10, 10), np.uint8)))
    (root / "link").symlink_to(
        tmp_path, target_is_directory=True
    )  # a symlink out of the root is an escape too
    fetcher = ImageFetcher(local_files_root=root)
    with pytest.raises(
        ImageFetchError, match=r"task 5: .*resolves outside LOCAL_FILES_DOCUMENT_ROOT"
    ):
        fetcher.fetch({"id": 5, "data": {"image": f"/data/local-files/?d={relative}"}}, "image")


def test_task_without_the_image_key_is_an_error_naming_it():
    with pytest.raises(
        ImageFetchError, match=r"task 9 has no image under data\['image'\] \(data keys: \['img'\]\)"
    ):
        ImageFetcher().fetch({"id": 9, "data": {"img": "/data/upload/1/a.png"}}, "image")


def mock_label_studio(
    routes: dict[str, httpx.Response | Exception], seen: list[httpx.Request]
) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        answer = routes.get(str(request.url), httpx.Response(404))
        if isinstance(answer, Exception):
            raise answer
        return answer

    return httpx.MockTransport(handle)


def test_upload_is_fetched_from_label_studio_with_the_legacy_token(tmp_path):
    pixels = np.full((9, 11), 7, dtype=np.uint8)
    seen: list[httpx.Request] = []
    transport = mock_label_studio(
        {f"{LS_URL}/data/upload/3/abc-slice.png": httpx.Response(200, content=png_bytes(pixels))},
        seen,
    )
    auth = label_studio_auth(LS_URL, LEGACY_KEY, transport=transport)
    fetcher = ImageFetcher(LS_URL, auth, transport=transport)
    image = fetcher.fetch({"id": 1, "data": {"image": "/data/upload/3/abc-slice.png"}}, "image")
    np.testing.assert_array_equal(image, pixels.astype(np.float32))
    assert seen[-1].headers["Authorization"] == f"Token {LEGACY_KEY}"


def test_personal_access_token_is_exchanged_before_fetching():
    now = int(time.time())
    refresh = jwt.encode(
        {"token_type": "refresh", "exp": now + 3600, "user_id": 1}, JWT_KEY, algorithm="HS256"
    )
    access = jwt.encode(
        {"token_type": "access", "exp": now + 300, "user_id": 1}, JWT_KEY, algorithm="HS256"
    )
    seen: list[httpx.Request] = []
    transport = mock_label_studio(
        {f"{LS_URL}/api/token/refresh/": httpx.Response(200, json={"access": access})}, seen
    )
    headers = label_studio_auth(LS_URL, refresh, transport=transport)()
    assert headers == {"Authorization": f"Bearer {access}"}
    assert json.loads(seen[0].content) == {"refresh": refresh}


def test_expired_personal_access_token_is_refused_up_front():
    expired = jwt.encode(
        {"token_type": "refresh", "exp": int(time.time()) - 10}, JWT_KEY, algorithm="HS256"
    )
    with pytest.raises(ImageFetchError, match="LABEL_STUDIO_API_KEY is not usable: .*expired"):
        label_studio_auth(LS_URL, expired)


def test_absolute_url_elsewhere_never_gets_the_key():
    seen: list[httpx.Request] = []
    url = "https://images.example.org/a.png"
    transport = mock_label_studio(
        {url: httpx.Response(200, content=png_bytes(np.zeros((8, 8), np.uint8)))}, seen
    )
    fetcher = ImageFetcher(
        LS_URL,
        lambda: {"Authorization": f"Token {LEGACY_KEY}"},
        transport=transport,
        allowed_hosts=["images.example.org"],
        resolver=PUBLIC,
    )
    fetcher.fetch({"id": 2, "data": {"image": url}}, "image")
    assert "Authorization" not in seen[0].headers


@pytest.mark.parametrize(
    "answer,message",
    [
        (httpx.Response(404), "not found \\(HTTP 404\\)"),
        (httpx.Response(401), "Label Studio refused the API key \\(HTTP 401\\)"),
        (
            httpx.Response(200, content=b"\x89PNG\r\n\x1a\n broken"),
            "not a PNG, JPEG, TIFF image",
        ),
        (httpx.ReadTimeout("timed out"), "no answer within 30.0 s"),
        (httpx.ConnectError("connection refused"), "cannot be downloaded: ConnectError"),
    ],
    ids=["404", "401", "broken-bytes", "timeout", "unreachable"],
)
def test_download_errors_name_task_and_url_but_not_the_token(answer, message):
    transport = mock_label_studio({f"{LS_URL}/data/upload/3/slice.png": answer}, [])
    fetcher = ImageFetcher(
        LS_URL, lambda: {"Authorization": f"Token {LEGACY_KEY}"}, transport=transport
    )
    with pytest.raises(
        ImageFetchError, match=rf"^task 44: image /data/upload/3/slice\.png(:| is) .*{message}"
    ) as caught:
        fetcher.fetch({"id": 44, "data": {"image": "/data/upload/3/slice.png"}}, "image")
    assert LEGACY_KEY not in str(caught.value)


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "ftp://ls.test/a.png",
        "javascript:alert(1)",
        "gopher://ls.test:8080/a.png",
    ],
)
def test_unsupported_url_schemes_are_refused_without_a_request(url):
    seen: list[httpx.Request] = []
    fetcher = ImageFetcher(
        LS_URL,
        lambda: {"Authorization": f"Token {LEGACY_KEY}"},
        transport=mock_label_studio({}, seen),
    )
    scheme = url.split(":", 1)[0]
    with pytest.raises(
        ImageFetchError, match=rf"^task 4: image .*URL scheme '{scheme}' is not supported"
    ):
        fetcher.fetch({"id": 4, "data": {"image": url}}, "image")
    assert seen == []


def test_download_above_the_byte_cap_is_refused():
    content = png_bytes(np.zeros((64, 64), np.uint8))
    url = f"{LS_URL}/data/upload/3/big.png"
    fetcher = ImageFetcher(
        LS_URL,
        lambda: {"Authorization": f"Token {LEGACY_KEY}"},
        transport=mock_label_studio({url: httpx.Response(200, content=content)}, []),
        max_bytes=len(content) - 1,
    )
    with pytest.raises(ImageFetchError, match=rf"larger than {len(content) - 1} bytes; refused"):
        fetcher.fetch({"id": 6, "data": {"image": "/data/upload/3/big.png"}}, "image")
    fetcher.max_bytes = len(content)  # exactly at the cap: accepted
    assert fetcher.fetch({"id": 6, "data": {"image": "/data/upload/3/big.png"}}, "image").shape == (
        64,
        64,
    )


def test_redirect_to_another_host_drops_the_key():
    seen: list[httpx.Request] = []
    elsewhere = "https://bucket.storage.test/a.png?X-Amz-Signature=abc"
    routes = {
        f"{LS_URL}/tasks/5/presign/?fileuri=czM6Ly9iL2EucG5n": httpx.Response(
            303, headers={"Location": elsewhere}
        ),
        elsewhere: httpx.Response(200, content=png_bytes(np.full((8, 8), 3, np.uint8))),
    }
    fetcher = ImageFetcher(
        LS_URL,
        lambda: {"Authorization": f"Token {LEGACY_KEY}"},
        transport=mock_label_studio(routes, seen),
        resolver=PUBLIC,
    )
    image = fetcher.fetch({"id": 5, "data": {"image": "s3://b/a.png"}}, "image")
    assert float(image.max()) == 3.0
    assert [str(request.url) for request in seen] == list(routes)
    assert (
        seen[0].headers["Authorization"] == f"Token {LEGACY_KEY}"
    )  # the presign call is Label Studio's
    assert "Authorization" not in seen[1].headers


def test_redirect_within_label_studio_keeps_the_key():
    seen: list[httpx.Request] = []
    moved = f"{LS_URL}/data/upload/3/moved.png"
    routes = {
        f"{LS_URL}/data/upload/3/a.png": httpx.Response(302, headers={"Location": moved}),
        moved: httpx.Response(200, content=png_bytes(np.zeros((8, 8), np.uint8))),
    }
    fetcher = ImageFetcher(
        LS_URL,
        lambda: {"Authorization": f"Token {LEGACY_KEY}"},
        transport=mock_label_studio(routes, seen),
    )
    fetcher.fetch({"id": 5, "data": {"image": "/data/upload/3/a.png"}}, "image")
    assert [request.headers.get("Authorization") for request in seen] == [f"Token {LEGACY_KEY}"] * 2


@pytest.mark.parametrize(
    "url",
    [
        "http://ls.test:8080@evil.test/data/upload/1/a.png",  # Label Studio's host as the user name
        "http://ls.test.evil.test:8080/data/upload/1/a.png",  # a longer host name
        "http://evil.test/ls.test:8080/data/upload/1/a.png",  # in the path
        "https://ls.test:8080/data/upload/1/a.png",  # another scheme
        "http://ls.test:8081/data/upload/1/a.png",  # another port
        "http://user@ls.test:8080/data/upload/1/a.png",  # user info: not Label Studio's URL as set
    ],
)
def test_lookalike_of_the_label_studio_host_never_gets_the_key(url):
    seen: list[httpx.Request] = []
    # Lookalike hosts allow-listed on purpose, so the request goes out: without the key.
    fetcher = ImageFetcher(
        LS_URL,
        lambda: {"Authorization": f"Token {LEGACY_KEY}"},
        transport=mock_label_studio({}, seen),
        resolver=PUBLIC,
        allowed_hosts=["evil.test", "ls.test.evil.test", "ls.test"],
    )
    with pytest.raises(ImageFetchError, match="not found"):
        fetcher.fetch({"id": 8, "data": {"image": url}}, "image")
    (request,) = seen
    # httpx sends a URL's own user info as Basic auth; the key itself must never go out.
    assert all(LEGACY_KEY not in value for value in request.headers.values())
    assert LEGACY_KEY not in str(request.url)


@pytest.mark.parametrize("url", ["http://ls.test:8080.evil.test/a.png", "http://[::1/a.png"])
def test_malformed_url_is_an_error_of_its_task(url):
    # Anything but ImageFetchError escapes the score job's per-task handling and fails the job.
    fetcher = ImageFetcher(
        LS_URL,
        lambda: {"Authorization": f"Token {LEGACY_KEY}"},
        transport=mock_label_studio({}, []),
    )
    with pytest.raises(ImageFetchError, match=r"^task 8: image .* is not a valid URL"):
        fetcher.fetch({"id": 8, "data": {"image": url}}, "image")


def test_upload_without_label_studio_url_is_an_error():
    with pytest.raises(ImageFetchError, match="LABEL_STUDIO_URL is not set"):
        ImageFetcher().fetch({"id": 1, "data": {"image": "/data/upload/1/a.png"}}, "image")


# -- brush masks and the labelling config -------------------------------------------------------


def test_repository_label_config_gives_the_brush_control():
    control = parse_label_config((REPO / "label_config.xml").read_text())
    assert (
        control.from_name,
        control.to_name,
        control.result_type,
        control.image_key,
        control.labels,
    ) == ("label", "image", "brushlabels", "image", ("left_atrium",))


def test_brush_round_trip_is_exact():
    control = parse_label_config((REPO / "label_config.xml").read_text())
    rng = np.random.default_rng(0)
    mask = np.zeros((37, 53), dtype=bool)
    mask[5:20, 10:40] = True
    mask |= rng.random(mask.shape) < 0.05  # isolated pixels: runs of length one in the RLE
    (item,) = mask_to_result(mask, control)
    assert {
        key: item[key]
        for key in (
            "from_name",
            "to_name",
            "type",
            "original_width",
            "original_height",
            "image_rotation",
        )
    } == {
        "from_name": "label",
        "to_name": "image",
        "type": "brushlabels",
        "original_width": 53,
        "original_height": 37,
        "image_rotation": 0,
    }
    assert item["value"]["format"] == "rle" and item["value"]["brushlabels"] == ["left_atrium"]
    np.testing.assert_array_equal(result_to_mask(item), mask)
    from label_studio_sdk.converter.brush import decode_rle

    # Painted pixels are fully opaque (255), not 1/255 (nearly invisible in the editor).
    alpha = decode_rle(item["value"]["rle"]).reshape(37, 53, 4)[..., 3]
    assert set(np.unique(alpha[mask])) == {255}


def test_annotation_union_ignores_other_controls():
    control = parse_label_config((REPO / "label_config.xml").read_text())
    top, bottom = np.zeros((10, 12), bool), np.zeros((10, 12), bool)
    top[1:3, 2:6], bottom[6:9, 4:10] = True, True
    other = {**mask_to_result(np.ones((10, 12), bool), control)[0], "from_name": "other"}
    items = mask_to_result(top, control) + mask_to_result(bottom, control) + [other]
    np.testing.assert_array_equal(annotation_label_map(items, control, 10, 12) > 0, top | bottom)


def test_polygon_config_and_rectangle_round_trip():
    config = (
        '<View><Image name="im" value="$pic"/><PolygonLabels name="poly" toName="im">'
        '<Label value="a"/><Label value="b"/></PolygonLabels></View>'
    )
    control = parse_label_config(config)
    assert (
        control.from_name,
        control.to_name,
        control.result_type,
        control.image_key,
        control.labels,
    ) == ("poly", "im", "polygonlabels", "pic", ("a", "b"))
    mask = np.zeros((20, 40), dtype=bool)
    mask[4:10, 8:30] = True
    (item,) = mask_to_result(mask, control, label="b")
    # Corners of the rectangle's pixel centres in percent: x = 8/40·100 = 20, 29/40·100 = 72.5; y =
    # 4/20·100 = 20, 9/20·100 = 45.
    assert sorted(map(tuple, item["value"]["points"])) == [
        (20.0, 20.0),
        (20.0, 45.0),
        (72.5, 20.0),
        (72.5, 45.0),
    ]
    assert item["value"]["polygonlabels"] == ["b"]
    np.testing.assert_array_equal(result_to_mask(item), mask)


@pytest.mark.parametrize(
    "config,message",
    [
        (
            '<View><Image name="i" value="$img"/><Choices name="c" toName="i"><Choice '
            'value="a"/></Choices></View>',
            "no BrushLabels or PolygonLabels tag \\(control tags found: Choices\\)",
        ),
        ("not xml at all", "not valid XML"),
        (
            '<View><Text name="t" value="$text"/><BrushLabels name="b" toName="t"><Label '
            'value="a"/></BrushLabels></View>',
            "which is not an <Image> tag",
        ),
    ],
)
def test_unusable_label_config_is_a_label_config_error(config, message):
    with pytest.raises(LabelConfigError, match=message):
        parse_label_config(config)


def test_unknown_label_and_non_bool_mask_are_refused():
    control = parse_label_config((REPO / "label_config.xml").read_text())
    with pytest.raises(LabelConfigError, match="label 'liver' is not one of 'label'"):
        mask_to_result(np.zeros((8, 8), bool), control, label="liver")
    with pytest.raises(InvalidInputError, match="expected a 2-D bool array"):
        mask_to_result(np.zeros((8, 8), np.uint8), control)


def test_truncated_rle_is_refused():
    control = parse_label_config((REPO / "label_config.xml").read_text())
    (item,) = mask_to_result(np.ones((8, 8), bool), control)
    item["original_height"] = 9
    with pytest.raises(InvalidInputError, match="decodes to 256 values; expected 9×8×4 = 288"):
        result_to_mask(item)


# -- configuration ------------------------------------------------------------------------------


def test_config_from_env_and_redacted_view(tmp_path):
    env = {
        "LABEL_STUDIO_URL": "http://admin:pw@ls:8080",
        "LABEL_STUDIO_API_KEY": LEGACY_KEY,
        "SUGFW_K": "4",
        "SUGFW_BUDGET": "35",
        "SUGFW_STATE_DIR": str(tmp_path),
        "BASIC_AUTH_USER": USER,
        "BASIC_AUTH_PASS": PASSWORD,
        "SUGFW_DEVICE": "",  # empty means unset
    }
    config = BackendConfig.from_env(env)
    assert (config.k, config.budget, config.state_dir, config.device, config.auth_enabled) == (
        4,
        35,
        tmp_path,
        "auto",
        True,
    )
    assert BackendConfig.from_env({"SUGFW_BUDGET": "0.005"}).budget == 0.005
    view = config.redacted()
    assert (view["label_studio_api_key"], view["basic_auth_pass"], view["label_studio_url"]) == (
        "***",
        "***",
        "http://***@ls:8080",
    )
    for secret in (LEGACY_KEY, PASSWORD, "admin:pw"):
        assert secret not in json.dumps(view) and secret not in repr(config)


@pytest.mark.parametrize(
    "env,message",
    [
        ({"BASIC_AUTH_USER": USER}, "BASIC_AUTH_PASS is not set"),
        ({"SUGFW_BUDGET": "1.5"}, "SUGFW_BUDGET=1.5: a ratio must lie strictly between 0 and 1"),
        ({"SUGFW_BUDGET": "0"}, "SUGFW_BUDGET=0: a count must be at least 1"),
        ({"SUGFW_BUDGET": "many"}, "SUGFW_BUDGET='many': expected a count"),
        ({"SUGFW_K": "ten"}, "SUGFW_K='ten': expected an integer"),
        ({"SUGFW_MODEL": "unet"}, "SUGFW_MODEL='unet' is unknown"),
        ({"LABEL_STUDIO_URL": "ls:8080"}, "expected an http\\(s\\) URL"),
        ({"LOCAL_FILES_DOCUMENT_ROOT": "/"}, "LOCAL_FILES_DOCUMENT_ROOT=/ is refused"),
    ],
)
def test_bad_environment_is_an_error_naming_the_variable(env, message):
    with pytest.raises(InvalidInputError, match=message):
        BackendConfig.from_env(env)


def test_cli_flags_override_the_environment(monkeypatch, tmp_path):
    from backend._wsgi import build_parser, config_from_args

    monkeypatch.setenv("SUGFW_K", "4")
    monkeypatch.setenv("SUGFW_BUDGET", "0.02")
    monkeypatch.setenv("SUGFW_STATE_DIR", str(tmp_path / "env"))
    args = build_parser().parse_args(["--k", "6", "--state-dir", str(tmp_path / "flag")])
    config = config_from_args(args)
    assert (config.k, config.budget, config.state_dir) == (6, 0.02, tmp_path / "flag")
