"""/setup checks the API key against a real Label Studio: a wrong key is a 400 that says so
without the key, the right one a 200 that queues the score job, an unknown project a 400."""

from __future__ import annotations

import pytest

from backend.config import BackendConfig
from backend.jobs.queue import JobQueue
from backend.model import SugfwModel
from backend.server.app import create_app
from tests.fakes import LABEL_CONFIG


@pytest.fixture(scope="module")
def ls_project(label_studio) -> int:
    from label_studio_sdk.client import LabelStudio

    ls = LabelStudio(base_url=label_studio.url, api_key=label_studio.token)
    return ls.projects.create(title="sugfw exposure", label_config=LABEL_CONFIG).id


def setup_client(tmp_path, label_studio, key: str):
    config = BackendConfig(
        state_dir=tmp_path / key[:6], label_studio_url=label_studio.url, label_studio_api_key=key
    )
    jobs = JobQueue(config.state_dir)
    return create_app(config, SugfwModel(config), jobs).test_client(), jobs


@pytest.mark.slow  # a real Label Studio
def test_setup_with_a_wrong_api_key_is_a_400_saying_so(tmp_path, label_studio, ls_project):
    wrong = "f" * 40
    client, jobs = setup_client(tmp_path, label_studio, wrong)
    response = client.post(
        "/setup", json={"project": f"{ls_project}.1700000000", "schema": LABEL_CONFIG}
    )
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert "refused LABEL_STUDIO_API_KEY (HTTP 401)" in error and wrong not in error
    assert jobs.pending() == []


@pytest.mark.slow  # a real Label Studio
def test_setup_with_the_right_key_is_a_200_and_an_unknown_project_a_400(
    tmp_path, label_studio, ls_project
):
    client, jobs = setup_client(tmp_path, label_studio, label_studio.token)
    response = client.post(
        "/setup", json={"project": f"{ls_project}.1700000000", "schema": LABEL_CONFIG}
    )
    assert response.status_code == 200, response.get_json()
    assert [(job.kind, job.project) for job in jobs.pending()] == [("score", str(ls_project))]
    unknown = client.post("/setup", json={"project": "987654.1", "schema": LABEL_CONFIG})
    assert unknown.status_code == 400 and "has no project 987654" in unknown.get_json()["error"]
