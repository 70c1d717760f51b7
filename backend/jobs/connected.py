"""Which projects went through ``/setup``: only their webhooks queue jobs.

A webhook names a project by id and nothing proves it came from Label Studio; without this list,
anything that reaches the port could make the backend act, with the admin key, on every project
that key can see. ``/setup`` is where a project is connected (and its access checked), so it is the
one place a project joins. One empty marker file per project, ``<root>/<project id>``, so that
concurrent ``/setup`` calls never rewrite a shared file.
"""

from __future__ import annotations

from pathlib import Path

from backend.jobs.state import PROJECT_STATE_DIR

CONNECTED_DIR = "connected"


class ConnectedProjects:
    """Project ids connected through ``/setup`` under ``<state dir>/connected``."""

    def __init__(self, state_dir: Path) -> None:
        self.root = Path(state_dir) / CONNECTED_DIR
        # A project scored by an earlier version (before this list existed) went through /setup.
        self._published = Path(state_dir) / PROJECT_STATE_DIR

    def add(self, project_id: int) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / str(int(project_id))).touch()

    def __contains__(self, project_id: object) -> bool:
        try:
            number = int(str(project_id))
        except ValueError:
            return False
        return (self.root / str(number)).is_file() or (self._published / f"{number}.json").is_file()
