"""What each project was last published with: a typed record, one JSON file per project.

``<state dir>/projects/<project id>.json`` holds the cold-start batch (``model_version``), the
version the queue follows (``served_version``: the batch until a training run publishes
``sugfw-unet-<n>``; ``/setup`` answers with it), each task's image (``images``: task id →
[image URL, content hash], so the next scoring job skips downloading unchanged images), the
published map (``published``: task id → [version, score] of the last prediction published for the
task; ``backend.jobs.publish``), what ordered the queue (``ordering``), what the queue was
published for (``fingerprint``) and the annotations the last training run learnt from
(``trained_on``).

Every write goes through :meth:`ProjectStateStore.update`; the queue and its priorities (the
published map) are written by ``backend.jobs.publish`` alone. Files written by earlier versions
load as they are; the older backend's ``queue`` entry, which the published map replaced, is dropped.
"""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backend.jobs.storage import read_json
from sugfw.atomic import atomic_write_json

PROJECT_STATE_DIR = "projects"
"""Under the state dir: one :class:`ProjectStateStore` file per project."""
LEGACY_KEYS = ("queue",)
"""Entries of older files that nothing reads any more: dropped on load."""

_write_lock = threading.Lock()  # read-modify-write of a file, across this process's stores


@dataclass(frozen=True)
class ProjectState:
    model_version: str | None = None
    """The cold-start batch last published."""
    served_version: str | None = None
    """The version Label Studio's queue follows (None: the cold-start batch)."""
    images: dict[str, list[str]] = field(default_factory=dict)
    """Task id (a string, as in JSON) → [image URL, content hash] of its scored slice."""
    published: dict[int, tuple[str, float]] = field(default_factory=dict)
    """Task id → (model version, score) of the last prediction published for it."""
    ordering: str | None = None
    """Hash of what ordered the published queue (``ScoreJob.ordering_key``)."""
    fingerprint: dict[str, Any] | None = None
    """Task count, labelling config and settings the queue was published for."""
    trained_on: str | None = None
    """Fingerprint of the annotations the last published training run learnt from."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Entries this version does not know, written back as they were."""

    @property
    def serving(self) -> str | None:
        """The version the queue follows: the served one, else the cold-start batch."""
        return self.served_version or self.model_version

    @classmethod
    def from_json(cls, payload: Any) -> ProjectState:
        """From a file's content (any version's; anything malformed reads as absent)."""
        if not isinstance(payload, dict):
            return cls()
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        return cls(
            model_version=_str(payload.get("model_version")),
            served_version=_str(payload.get("served_version")),
            images=_images(payload.get("images")),
            published=_published(payload.get("published")),
            ordering=_str(payload.get("ordering")),
            fingerprint=_dict(payload.get("fingerprint")),
            trained_on=_str(payload.get("trained_on")),
            extra={k: v for k, v in payload.items() if k not in known and k not in LEGACY_KEYS},
        )

    def to_json(self) -> dict[str, Any]:
        payload: dict[str, Any] = dict(self.extra)
        for name in ("model_version", "served_version", "ordering", "fingerprint", "trained_on"):
            value = getattr(self, name)
            if value is not None:
                payload[name] = value
        payload["images"] = self.images
        payload["published"] = {
            str(t): [version, score] for t, (version, score) in sorted(self.published.items())
        }
        return payload


class ProjectStateStore:
    """The :class:`ProjectState` of each project, ``<root>/<project id>.json``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, project_id: int | str) -> Path:
        return self.root / f"{int(project_id)}.json"

    def get(self, project_id: int | str) -> ProjectState:
        return ProjectState.from_json(read_json(self._path(project_id)))

    def served_version(self, project_id: int | str) -> str | None:
        return self.get(project_id).serving

    def update(self, project_id: int | str, **changes: Any) -> ProjectState:
        """The one writer: ``changes`` (field → new value) applied to the stored state."""
        with _write_lock:
            state = dataclasses.replace(self.get(project_id), **changes)
            atomic_write_json(self._path(project_id), state.to_json())
            return state

    def set_served_version(self, project_id: int | str, version: str) -> None:
        self.update(project_id, served_version=version)


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _dict(value: Any) -> dict[str, Any] | None:
    return value if isinstance(value, dict) else None


def _images(value: Any) -> dict[str, list[str]]:
    if not isinstance(value, dict):
        return {}
    return {str(t): list(entry) for t, entry in value.items() if isinstance(entry, list)}


def _published(value: Any) -> dict[int, tuple[str, float]]:
    """Well-formed ``{task id: [version, score]}`` entries (others are skipped, as before)."""
    if not isinstance(value, dict):
        return {}
    published = {}
    for task_id, entry in value.items():
        if isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str):
            published[int(task_id)] = (entry[0], float(entry[1]))
    return published
