"""Fixtures of the backend tests: Flask test clients over an app whose job worker is not started
(tests drive the queue by hand), and a clock they set."""

from __future__ import annotations

import pytest

from backend.config import BackendConfig
from backend.jobs.connected import ConnectedProjects
from backend.jobs.queue import JobQueue
from backend.model import SugfwModel
from backend.server.app import create_app
from tests.fakes import PASSWORD, USER

CONNECTED = (1, 2, 3, 4, 5, 7, 9)
"""Projects ``make_client``'s app holds as connected (webhooks of other projects are refused)."""


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def app_client(config: BackendConfig, jobs: JobQueue, projects) -> tuple:
    """(client, jobs, model) of an app over ``config`` and ``jobs`` with ``projects`` connected,
    as if /setup had run for them."""
    model = SugfwModel(config)
    for project in projects:
        ConnectedProjects(config.state_dir).add(project)
    return create_app(config, model, jobs).test_client(), jobs, model


@pytest.fixture
def make_client(tmp_path, clock):
    """(client, jobs, model), with Basic auth on or off; the queue runs on ``clock``."""

    def make(auth: bool = False):
        config = BackendConfig(
            state_dir=tmp_path / "state",
            basic_auth_user=USER if auth else None,
            basic_auth_pass=PASSWORD if auth else None,
        )
        return app_client(
            config, JobQueue(config.state_dir, debounce_s=5.0, clock=clock), CONNECTED
        )

    return make


@pytest.fixture
def door(tmp_path):
    """(client, jobs, model) of an app with the given settings, projects 3 and 7 connected."""

    def make(**settings):
        config = BackendConfig(state_dir=tmp_path / "state", **settings)
        return app_client(config, JobQueue(config.state_dir, debounce_s=5.0), (3, 7))

    return make
