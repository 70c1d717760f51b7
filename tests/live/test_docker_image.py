"""The image, built with podman (docker/build_local.sh) and run beside the tests' Label Studio.

Out of the default run: building the image from nothing takes longer than the rest of a test run
can spare (docs/backend.md, "Docker and compose"), so these tests skip unless selected by their
marker:

    .venv/bin/python -m pytest -m container tests/live/test_docker_image.py

They need root and podman, runc and debootstrap (``apt-get install podman runc debootstrap``). The
container shares the host's network, so the backend in it and the Label Studio of
``tests/live/conftest.py`` reach each other on 127.0.0.1; Basic auth is on, as the image requires.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from backend.local.server import free_port
from tests.fakes import png_bytes
from tests.live.test_integration_labelstudio import import_pngs, synthetic_slice

pytestmark = [pytest.mark.slow, pytest.mark.container, pytest.mark.timeout(3600)]

REPO = Path(__file__).resolve().parents[2]
IMAGE = "localhost/sugfw-backend:test"
PODMAN = ["bash", str(REPO / "docker" / "podman.sh")]
BUILD_TIMEOUT_S = 3000.0
START_TIMEOUT_S = 300.0  # gunicorn up and the model loaded
QUEUE_TIMEOUT_S = 600.0  # the score job of a few slices on this machine's shared CPU
N_SLICES = 4


def selected(config: pytest.Config) -> bool:
    """Asked for by marker: ``-m container`` (or an expression naming it, not negated)."""
    expression = config.getoption("markexpr") or ""
    return re.search(r"(?<!not )\bcontainer\b", expression) is not None


def podman(
    *args: str, timeout: float = 120.0, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*PODMAN, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=None if env is None else {**os.environ, **env},
    )


@pytest.fixture(scope="module")
def image(request, tmp_path_factory) -> str:
    """The image built from this working tree (layers cached by podman between runs)."""
    if not selected(request.config):
        pytest.skip("builds and runs the image (minutes): select it with -m container")
    for tool in ("podman", "debootstrap"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not installed (apt-get install podman runc debootstrap)")
    log = tmp_path_factory.mktemp("image") / "build.log"
    with log.open("w") as out:
        built = subprocess.run(
            ["bash", str(REPO / "docker" / "build_local.sh"), IMAGE],
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=BUILD_TIMEOUT_S,
            check=False,
        )
    if built.returncode != 0:
        pytest.fail(f"docker/build_local.sh failed:\n{log.read_text()[-4000:]}")
    return IMAGE


@dataclass(frozen=True)
class Container:
    name: str
    url: str
    user: str
    password: str
    label_studio: object
    """The Label Studio of tests/live/conftest.py it is connected to."""

    @property
    def auth(self) -> tuple[str, str]:
        return (self.user, self.password)

    def logs(self) -> str:
        logged = podman("logs", "--tail", "60", self.name)  # gunicorn and the app log to stderr
        return (logged.stdout + logged.stderr)[-6000:]

    def running(self) -> bool:
        state = podman("inspect", "--format", "{{.State.Running}}", self.name)
        return state.stdout.strip() == "true"

    def healthcheck(self) -> subprocess.CompletedProcess:
        """The image's HEALTHCHECK, run now (no systemd timer runs it here)."""
        return podman("healthcheck", "run", self.name, timeout=60.0)


@pytest.fixture(scope="module")
def container(image, request) -> Iterator[Container]:
    """The image's default command, the backend under gunicorn, on 127.0.0.1 of the host."""
    label_studio = request.getfixturevalue("label_studio")  # only once the image is there
    port = free_port()
    name = f"sugfw-test-{secrets.token_hex(4)}"
    user, password = "sugfw", secrets.token_urlsafe(16)
    env = {
        "LABEL_STUDIO_URL": label_studio.url,
        "LABEL_STUDIO_API_KEY": label_studio.token,
        "BASIC_AUTH_USER": user,
        "BASIC_AUTH_PASS": password,
        # Host network: bind loopback, where Label Studio reaches it; the probe follows the port.
        "SUGFW_BIND": f"127.0.0.1:{port}",
        "SUGFW_HEALTH_URL": f"http://127.0.0.1:{port}/health",
        "SUGFW_DEVICE": "cpu",
        "SUGFW_K": "1",
        "SUGFW_GRID": "128",
        "SUGFW_BUDGET": "2",
        "SUGFW_DEBOUNCE_S": "0.2",
    }
    # `--env NAME` takes the value from podman's environment: no secret on a command line.
    flags = [f"--env={key}" for key in env]
    started = podman("run", "--detach", "--network=host", f"--name={name}", *flags, image, env=env)
    assert started.returncode == 0, started.stderr
    running = Container(name, f"http://127.0.0.1:{port}", user, password, label_studio)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while running.healthcheck().returncode != 0:
            if not running.running() or time.monotonic() > deadline:
                pytest.fail(f"the container never became healthy:\n{running.logs()}")
            time.sleep(3)
        yield running
    finally:
        podman("rm", "--force", "--time=10", name)


def test_image_keeps_its_health_check_and_runs_as_its_own_user(image):
    user = podman("image", "inspect", "--format", "{{.Config.User}}", image).stdout
    assert user.strip() == "sugfw"
    probe = podman("image", "inspect", "--format", "{{json .Config.Healthcheck}}", image).stdout
    # Kept because the image is built in the docker format: the OCI format has no health check.
    assert json.loads(probe)["Test"] == ["CMD", "python", "/app/docker/healthcheck.py"]


def test_container_answers_health_with_basic_auth_only(container):
    checked = container.healthcheck()
    assert checked.returncode == 0, checked.stdout + checked.stderr
    status = podman("inspect", "--format", "{{.State.Health.Status}}", container.name)
    assert status.stdout.strip() == "healthy"
    answer = httpx.get(f"{container.url}/health", auth=container.auth, timeout=10.0)
    assert (answer.status_code, answer.json()["status"]) == (200, "UP")
    assert httpx.get(f"{container.url}/health", timeout=10.0).status_code == 401
    assert httpx.get(f"{container.url}/health", auth=("sugfw", "wrong")).status_code == 401


def test_backend_in_the_container_publishes_a_queue_and_serves_a_prediction(container):
    from label_studio_sdk.client import LabelStudio

    label_studio = container.label_studio
    ls = LabelStudio(base_url=label_studio.url, api_key=label_studio.token)
    project = ls.projects.create(
        title="sugfw in a container", label_config=(REPO / "label_config.xml").read_text()
    )
    files = {f"slice_{i}.png": png_bytes(synthetic_slice(i)) for i in range(N_SLICES)}
    task_ids = import_pngs(label_studio, project.id, files)
    ls.ml.create(  # Label Studio calls /health and /setup with the pair: /setup queues scoring
        project=project.id,
        url=container.url,
        title="sugfw",
        auth_method="BASIC_AUTH",
        basic_auth_user=container.user,
        basic_auth_pass=container.password,
    )
    deadline = time.monotonic() + QUEUE_TIMEOUT_S
    while True:
        # The backend names the batch it publishes and makes it the project's model version.
        version = ls.projects.get(id=project.id).model_version
        tasks = {task.id: task for task in ls.tasks.list(project=project.id)}
        priorities = {task_id: task.data.get("priority") for task_id, task in tasks.items()}
        versions = {
            task_id: {p.model_version for p in ls.predictions.list(task=task_id)}
            for task_id in task_ids
        }
        predicted = {task_id for task_id, seen in versions.items() if version in seen}
        if all(type(value) is int for value in priorities.values()) and predicted == set(task_ids):
            break
        if not container.running() or time.monotonic() > deadline:
            pytest.fail(
                f"no queue published for project {project.id} (priorities {priorities}, "
                f"project version {version}, predictions {versions}):\n{container.logs()}"
            )
        time.sleep(3)
    # The queue: each task a rank of its own.
    assert len(set(priorities.values())) == len(task_ids)
    # The model found the disks: regions in the published predictions.
    stored = {
        task_id: next(p for p in ls.predictions.list(task=task_id) if p.model_version == version)
        for task_id in task_ids
    }
    with_regions = [task_id for task_id, p in stored.items() if p.result]
    assert with_regions, "every published prediction is empty"
    # A prediction served on request, as Label Studio asks when a task is opened: the published one.
    task = tasks[with_regions[0]]
    answer = httpx.post(
        f"{container.url}/predict",
        json={"tasks": [{"id": task.id, "data": task.data}]},
        auth=container.auth,
        timeout=60.0,
    )
    assert answer.status_code == 200, answer.text
    (prediction,) = answer.json()["results"]
    assert prediction["model_version"] == version
    assert [region["value"] for region in prediction["result"]] == [
        region["value"] for region in stored[task.id].result
    ]


def test_cli_runs_from_the_image(image):
    ran = podman("run", "--rm", "--no-healthcheck", image, "sugfw", "score", "--help")
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.startswith("usage: sugfw score")
