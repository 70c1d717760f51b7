"""The ML-backend routes: /health, /setup, /predict, /webhook and /metrics answer their contract;
a bad body is a 400 naming the problem, a failure a 500 without traceback. No network, no model."""

from __future__ import annotations

import json
import logging
import time

import pytest

from tests.fakes import LABEL_CONFIG


def test_health_and_setup_contract(make_client):
    client, jobs, model = make_client()
    assert client.get("/health").get_json() == {
        "status": "UP",
        "model_class": "SugfwModel",
        "model_version": "sugfw-litemedsam",
    }
    answer = client.post(
        "/setup", json={"project": "12.1712345678", "schema": LABEL_CONFIG, "access_token": "x"}
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
