"""The Label Studio calls the backend makes, through ``label-studio-sdk``, for one project.

Queue order reaches Label Studio two ways (checked against ``/api/projects/{id}/next``):
- "Label All Tasks": the project's ``sampling`` is uncertainty sampling and its ``model_version``
  names the batch; tasks are then served by ascending prediction ``score`` (the queue position),
  the annotator's least-labelled ``cluster`` first, which is GSCU's round-by-round order. (With
  several annotators Label Studio picks at random among the first few, so two people do not get
  the same task.)
- "Label Tasks As Displayed": a Data Manager tab sorted by ascending ``data.priority`` (the same
  queue position, stored as a number so that 10 sorts after 9).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from backend.config import BackendConfig
from backend.labelstudio.connection import connect
from backend.labelstudio.images import ImageFetcher, ImagePolicy, label_studio_auth
from sugfw.errors import InvalidInputError

log = logging.getLogger(__name__)

UNCERTAINTY_SAMPLING = "Uncertainty sampling"
PRIORITY_FIELD = "priority"
PRIORITY_VIEW_TITLE = "SUGFW queue"
PRIORITY_ORDERING = [f"tasks:data.{PRIORITY_FIELD}"]
"""Ascending: priority 0 (queue position 0) is labelled first."""
PAGE_SIZE = 100
WRITE_CONCURRENCY = 4
"""Requests in flight at once for per-task writes (Label Studio has no bulk endpoint that keeps
``cluster``); more gains little against one SQLite-backed server."""


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
    """One Label Studio project, as the scoring job reads and writes it."""

    def __init__(self, client: Any, project_id: int, http: httpx.Client | None = None) -> None:
        self.client = client
        self.project_id = project_id
        self._http = http

    @classmethod
    def connect(cls, config: BackendConfig, project_id: int) -> ProjectClient:
        url, key = require_label_studio(config)
        connection = connect(url, key)
        return cls(connection.sdk, project_id, connection.http)

    def close(self) -> None:
        if self._http is not None:
            self._http.close()

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

    def prediction_versions(self) -> list[tuple[int, int, str | None]]:
        """(prediction id, task id, model_version) of every prediction in the project."""
        return [
            (item.id, item.task, item.model_version)
            for item in self.client.predictions.list(project=self.project_id)
        ]

    def create_predictions(self, predictions: Mapping[int, Mapping[str, Any]]) -> None:
        """Create one prediction per task id.

        One request each, a few at a time: the bulk ``import/predictions`` endpoint drops
        ``cluster`` (Label Studio 1.23).
        """
        self._each(
            lambda item: self.client.predictions.create(
                task=item[0], project=self.project_id, **item[1]
            ),
            predictions.items(),
        )

    def delete_predictions(self, prediction_ids: Iterable[int]) -> None:
        self._each(
            lambda prediction_id: self.client.predictions.delete(id=prediction_id), prediction_ids
        )

    def set_task_data(self, task_id: int, data: Mapping[str, Any]) -> None:
        self.client.tasks.update(id=str(task_id), data=dict(data))

    def set_tasks_data(self, changes: Mapping[int, Mapping[str, Any]]) -> None:
        """``set_task_data`` for many tasks, a few requests at a time."""
        self._each(lambda item: self.set_task_data(*item), changes.items())

    def fingerprint(self) -> dict[str, Any]:
        """What a score job depends on that one request can read: the task count and the
        labelling config (imports and deletions change the count; edits of the config the hash)."""
        project = self.client.projects.get(id=self.project_id)
        config = (project.label_config or "").encode()
        return {"tasks": project.task_number, "label_config": hashlib.sha256(config).hexdigest()}

    @staticmethod
    def _each(call: Callable[[Any], Any], items: Iterable[Any]) -> None:
        """``call`` on every item over ``WRITE_CONCURRENCY`` connections; the first error is
        raised once the requests in flight have finished (a rerun completes what is missing)."""
        items = list(items)
        if len(items) <= 1:
            for item in items:
                call(item)
            return
        with ThreadPoolExecutor(max_workers=WRITE_CONCURRENCY) as pool:
            for future in [pool.submit(call, item) for item in items]:
                future.result()

    def serve_by_prediction_score(self, model_version: str) -> None:
        """Label All Tasks serves tasks by ascending score of ``model_version``'s predictions."""
        # The server accepts this version only once predictions carrying it exist.
        self.client.projects.update(
            id=self.project_id, sampling=UNCERTAINTY_SAMPLING, model_version=model_version
        )

    def ensure_priority_view(self) -> None:
        """A Data Manager tab sorted by ascending priority (created once, re-sorted if edited)."""
        for view in self.client.views.list(project=self.project_id):
            data = dict(view.data or {})
            if data.get("title") == PRIORITY_VIEW_TITLE:
                if data.get("ordering") != PRIORITY_ORDERING:
                    self.client.views.update(
                        id=str(view.id),
                        project=self.project_id,
                        data={**data, "ordering": PRIORITY_ORDERING},
                    )
                return
        self.client.views.create(
            project=self.project_id,
            data={
                "title": PRIORITY_VIEW_TITLE,
                "ordering": PRIORITY_ORDERING,
                "filters": {"conjunction": "and", "items": []},
            },
        )
