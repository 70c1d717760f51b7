"""The Label Studio calls the backend makes, through ``label-studio-sdk``, for one project.

Queue order reaches Label Studio two ways (checked against ``/api/projects/{id}/next``):
- "Label All Tasks": the project's ``sampling`` is uncertainty sampling and its ``model_version``
  names the batch; tasks are then served by ascending prediction ``score`` (the queue position).
  Predictions carry no ``cluster``: Label Studio would serve the annotator's least-labelled
  cluster first, which breaks the published order (docs/benchmarks.md, "Backend at project
  scale"). With several annotators Label Studio picks at random among the first few, so two
  people do not get the same task.
- "Label Tasks As Displayed": a Data Manager tab sorted by ascending prediction score (the
  average score of the predictions of the project's ``model_version``).

Predictions are written with the bulk import endpoint, in chunks, and removed a whole version at
a time: a publish costs a few requests per thousand tasks, not one per task.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator, Mapping
from typing import Any

import httpx

from backend.config import BackendConfig
from backend.labelstudio.connection import Connection, connect, label_studio_auth
from backend.labelstudio.image_policy import ImagePolicy
from backend.labelstudio.images import ImageFetcher
from sugfw.errors import InvalidInputError

log = logging.getLogger(__name__)

UNCERTAINTY_SAMPLING = "Uncertainty sampling"
QUEUE_VIEW_TITLE = "SUGFW queue"
QUEUE_ORDERING = ["tasks:predictions_score"]
"""Ascending: score 0 (queue position 0) is labelled first."""
PAGE_SIZE = 1000
"""Tasks per listed page (Label Studio sets no maximum by default): 100,000 tasks, 100 requests."""
IMPORT_CHUNK = 10_000
"""Predictions per import request at most. Few and large: after each import request Label
Studio 1.23 recounts the counters of every task in the project (measured: 5.7 s at 5,000 tasks,
whether the request carried 100 predictions or 1,000)."""
IMPORT_CHUNK_BYTES = 32 * 1024 * 1024
"""And at most this much JSON per request (brush masks make predictions large; the server takes
up to 250 MB)."""


def require_label_studio(config: BackendConfig) -> tuple[str, str]:
    if config.label_studio_url is None or config.label_studio_api_key is None:
        missing = "LABEL_STUDIO_URL" if config.label_studio_url is None else "LABEL_STUDIO_API_KEY"
        raise InvalidInputError(
            f"{missing} is not set: the backend cannot read tasks from or write predictions to "
            "Label Studio"
        )
    return config.label_studio_url, config.label_studio_api_key


def image_fetcher(config: BackendConfig) -> ImageFetcher:
    """An image fetcher authenticated with the configured key (or anonymous when none is set)."""
    auth = None
    if config.label_studio_url is not None and config.label_studio_api_key is not None:
        auth = label_studio_auth(
            config.label_studio_url, config.label_studio_api_key, config.image_timeout_s
        )
    policy = ImagePolicy.from_config(config)
    return ImageFetcher(
        config.label_studio_url,
        auth,
        config.local_files_document_root,
        timeout_s=config.image_timeout_s,
        allowed_hosts=policy.allowed_hosts,
        allow_private=policy.allow_private,
        max_bytes=policy.max_bytes,
        max_pixels=policy.max_pixels,
        deadline_s=policy.deadline_s,
    )


class ProjectClient:
    """One Label Studio project, as the scoring and training jobs read and write it."""

    def __init__(self, client: Any, project_id: int, connection: Connection | None = None) -> None:
        self.client = client
        self.project_id = project_id
        self._connection = connection

    @classmethod
    def connect(cls, config: BackendConfig, project_id: int) -> ProjectClient:
        url, key = require_label_studio(config)
        connection = connect(url, key)
        return cls(connection.sdk, project_id, connection)

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()

    def label_config(self) -> str:
        return self.client.projects.get(id=self.project_id).label_config

    def tasks(self) -> list[dict[str, Any]]:
        """Every task of the project as ``{"id", "data"}``, in id order."""
        pager = self.client.tasks.list(
            project=self.project_id, page_size=PAGE_SIZE, fields="task_only"
        )
        tasks = [{"id": task.id, "data": dict(task.data or {})} for task in pager]
        return sorted(tasks, key=lambda task: task["id"])

    def annotated_tasks(self) -> list[dict[str, Any]]:
        """Every task with at least one annotation, as ``{"id", "data", "annotations"}``, in id
        order.

        Each annotation is ``{"id", "result", "was_cancelled", "updated_at"}`` (``updated_at`` an
        ISO string).
        """
        pager = self.client.tasks.list(project=self.project_id, page_size=PAGE_SIZE, fields="all")
        tasks = []
        for task in pager:
            listed = getattr(task, "annotations", None)
            # Servers that lazy-load annotations list stubs without results: ask for the task's own
            # list then.
            if not (
                isinstance(listed, list)
                and all(isinstance(item, dict) and "result" in item for item in listed)
            ):
                listed = [item.dict() for item in self.client.annotations.list(id=task.id)]
            annotations = [
                {
                    "id": item.get("id"),
                    "result": list(item.get("result") or []),
                    "was_cancelled": bool(item.get("was_cancelled")),
                    "updated_at": str(item.get("updated_at") or item.get("created_at") or ""),
                }
                for item in listed
            ]
            if annotations:
                tasks.append(
                    {"id": task.id, "data": dict(task.data or {}), "annotations": annotations}
                )
        return sorted(tasks, key=lambda task: task["id"])

    def version_counts(self) -> dict[str, int]:
        """How many predictions of each model version the project holds (one request, however
        many predictions)."""
        counts = self._request("GET", f"api/projects/{self.project_id}/model-versions/").json()
        if not isinstance(counts, dict):
            raise InvalidInputError(
                f"Label Studio listed the model versions of project {self.project_id} as "
                f"{type(counts).__name__}, not as version → count"
            )
        # The project's own version is listed with 0 when it has no prediction.
        return {str(v): int(count) for v, count in counts.items() if v is not None and count}

    def create_predictions(self, predictions: Mapping[int, Mapping[str, Any]]) -> None:
        """One prediction per task id (``result``, ``score``, ``model_version``), through the
        bulk import endpoint in chunks of at most ``IMPORT_CHUNK`` predictions and
        ``IMPORT_CHUNK_BYTES`` of JSON. A chunk that fails leaves the earlier ones created."""
        for chunk in import_chunks(predictions):
            self._request(
                "POST",
                f"api/projects/{self.project_id}/import/predictions",
                content=chunk,
                headers={"Content-Type": "application/json"},
            )

    def delete_version(self, model_version: str) -> int:
        """Delete every prediction of ``model_version`` in the project (one request); how many
        there were."""
        answer = self._request(
            "DELETE",
            f"api/projects/{self.project_id}/model-versions/",
            json={"model_version": model_version},
        ).json()
        deleted = answer.get("deleted_predictions") if isinstance(answer, dict) else None
        return int(deleted) if isinstance(deleted, (int, float)) else 0

    def fingerprint(self) -> dict[str, Any]:
        """What a score job depends on that one request can read: the task count and the
        labelling config (imports and deletions change the count; edits of the config the hash)."""
        project = self.client.projects.get(id=self.project_id)
        config = (project.label_config or "").encode()
        return {"tasks": project.task_number, "label_config": hashlib.sha256(config).hexdigest()}

    def serve_by_prediction_score(self, model_version: str) -> None:
        """Label All Tasks serves tasks by ascending score of ``model_version``'s predictions."""
        # The server accepts this version only once predictions carrying it exist.
        self.client.projects.update(
            id=self.project_id, sampling=UNCERTAINTY_SAMPLING, model_version=model_version
        )

    def ensure_queue_view(self) -> None:
        """A Data Manager tab sorted by ascending prediction score (created once, re-sorted if
        edited)."""
        for view in self.client.views.list(project=self.project_id):
            data = dict(view.data or {})
            if data.get("title") == QUEUE_VIEW_TITLE:
                if data.get("ordering") != QUEUE_ORDERING:
                    self.client.views.update(
                        id=str(view.id),
                        project=self.project_id,
                        data={**data, "ordering": QUEUE_ORDERING},
                    )
                return
        self.client.views.create(
            project=self.project_id,
            data={
                "title": QUEUE_VIEW_TITLE,
                "ordering": QUEUE_ORDERING,
                "filters": {"conjunction": "and", "items": []},
            },
        )

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """An authenticated request the SDK has no (or only a slow) method for. A refusal (4xx
        other than 429) is an ``InvalidInputError`` with Label Studio's reason; a server error
        or 429 an ``httpx.HTTPStatusError``, which the job queue retries."""
        if self._connection is None:
            raise InvalidInputError("this project client has no connection for raw requests")
        response = self._connection.request(method, path, **kwargs)
        status = response.status_code
        if 400 <= status < 500 and status != 429:
            raise InvalidInputError(
                f"Label Studio refused {method} {path}: HTTP {status} {response.text[:300]}"
            )
        response.raise_for_status()
        return response


def import_chunks(
    predictions: Mapping[int, Mapping[str, Any]],
    max_items: int | None = None,
    max_bytes: int | None = None,
) -> Iterator[bytes]:
    """JSON bodies for the import endpoint: ``{task, result, score, model_version}`` items, at
    most ``max_items`` (``IMPORT_CHUNK``) per body and ``max_bytes`` (``IMPORT_CHUNK_BYTES``) of
    JSON unless a single prediction is larger on its own."""
    max_items = max_items or IMPORT_CHUNK
    max_bytes = max_bytes or IMPORT_CHUNK_BYTES
    items: list[bytes] = []
    size = 2
    for task_id, prediction in predictions.items():
        item = json.dumps(
            {
                "task": int(task_id),
                "result": list(prediction.get("result") or []),
                "score": prediction.get("score"),
                "model_version": prediction.get("model_version"),
            },
            separators=(",", ":"),
        ).encode()
        if items and (len(items) >= max_items or size + len(item) + 1 > max_bytes):
            yield b"[" + b",".join(items) + b"]"
            items, size = [], 2
        items.append(item)
        size += len(item) + 1
    if items:
        yield b"[" + b",".join(items) + b"]"
