"""Bulk prediction import bodies: every prediction once, in order, within both limits."""

from __future__ import annotations

import json

from backend.labelstudio.client import import_chunks


def prediction(task_id: int, size: int = 10) -> dict:
    result = [{"value": {"rle": [task_id] * size}}]
    return {"result": result, "score": task_id / 100, "model_version": "v", "cluster": 3}


def test_chunks_hold_every_prediction_once_within_the_count_and_byte_limits():
    predictions = {t: prediction(t, size=1 + t % 7) for t in range(1, 41)}
    bodies = list(import_chunks(predictions, max_items=8, max_bytes=600))
    items = [item for body in bodies for item in json.loads(body)]
    assert [item["task"] for item in items] == list(predictions)
    assert all(len(json.loads(body)) <= 8 and len(body) <= 600 for body in bodies)
    # What Label Studio's import keeps, and no cluster: the score alone orders the stream.
    assert items[0] == {
        "task": 1,
        "result": predictions[1]["result"],
        "score": 0.01,
        "model_version": "v",
    }
    assert len(bodies) > 40 // 8  # the byte limit split some chunks


def test_a_prediction_larger_than_the_byte_limit_goes_alone():
    bodies = list(import_chunks({1: prediction(1, 500), 2: prediction(2)}, max_bytes=100))
    assert [[item["task"] for item in json.loads(body)] for body in bodies] == [[1], [2]]


def test_nothing_to_import_sends_nothing():
    assert list(import_chunks({})) == []
