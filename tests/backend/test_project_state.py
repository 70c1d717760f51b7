"""The typed project state reads the files earlier versions wrote, and writes the same format."""

from __future__ import annotations

import json

from backend.jobs.state import ProjectState, ProjectStateStore

OLD_FILE = {
    "model_version": "sugfw-litemedsam-abc",
    "served_version": "sugfw-unet-2",
    "images": {"7": ["/data/upload/1/a.png", "hash7"]},
    "published": {"7": ["sugfw-unet-2", 0.25], "8": "malformed"},
    "ordering": "0123abcd",
    "fingerprint": {"tasks": 2, "config": "c", "settings": "s"},
    "trained_on": "f00d",
    "queue": [7, 8],  # the older backend's queue: replaced by the published map
}


def test_a_file_of_an_earlier_version_loads(tmp_path) -> None:
    (tmp_path / "3.json").write_text(json.dumps(OLD_FILE))
    state = ProjectStateStore(tmp_path).get(3)
    assert state.model_version == "sugfw-litemedsam-abc" and state.serving == "sugfw-unet-2"
    assert state.images == {"7": ["/data/upload/1/a.png", "hash7"]}
    assert state.published == {7: ("sugfw-unet-2", 0.25)}
    assert (state.ordering, state.trained_on) == ("0123abcd", "f00d")
    assert state.fingerprint == OLD_FILE["fingerprint"]


def test_an_update_rewrites_the_same_format_without_the_old_queue(tmp_path) -> None:
    (tmp_path / "3.json").write_text(json.dumps({**OLD_FILE, "future": 1}))
    store = ProjectStateStore(tmp_path)
    store.update(3, trained_on="beef")
    written = json.loads((tmp_path / "3.json").read_text())
    expected = {k: v for k, v in OLD_FILE.items() if k != "queue"}
    expected.update(trained_on="beef", published={"7": ["sugfw-unet-2", 0.25]}, future=1)
    assert written == expected
    assert ProjectState.from_json(written) == store.get(3)


def test_a_missing_or_broken_file_is_an_empty_state(tmp_path) -> None:
    (tmp_path / "4.json").write_text("[1, 2")
    store = ProjectStateStore(tmp_path)
    assert store.get(4) == store.get(5) == ProjectState()
    assert store.served_version(5) is None
    store.set_served_version(5, "v1")
    assert store.get(5).serving == "v1"
