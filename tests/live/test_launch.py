"""The README's main job, ``python -m backend.local.launch``, end to end on a tiny MSD folder.

It starts its own Label Studio (from ``.venv-ls``, as the integration tests do) and the backend as
a subprocess, imports the slices, connects the backend and prints the URL and login; the test then
reads the project back through the SDK and waits for the published queue. Small settings (four
slices, K = 1, one box size) keep it to a couple of minutes on two CPU cores.
"""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import nibabel as nib
import numpy as np
import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
N_SLICES, SLICE_STEP, DEPTH = 4, 2, 4
"""Two imported volumes of DEPTH axial slices, every SLICE_STEP-th imported: N_SLICES tasks."""
START_S, QUEUE_S = 420.0, 420.0


def phantom(seed: int, size: int = 64) -> np.ndarray:
    """A bright ellipsoid in noise, (size, size, DEPTH), axial axis last."""
    rng = np.random.default_rng(seed)
    rows, cols, slices = np.mgrid[:size, :size, :DEPTH]
    inside = ((rows - 30 - 3 * seed) / 14) ** 2 + ((cols - 28) / 10) ** 2 + (
        (slices - 1.5) / 3
    ) ** 2 <= 1
    return (100 + 20 * rng.standard_normal(rows.shape) + 400 * inside).astype(np.float32)


@pytest.fixture(scope="module")
def volumes(tmp_path_factory) -> Path:
    """MSD layout: three labelled phantoms; the main job holds the last one out as its test set."""
    folder = tmp_path_factory.mktemp("volumes")
    affine = np.diag([0.8, 0.8, 2.5, 1.0])  # RAS: the last axis is the axial one
    for sub in ("imagesTr", "labelsTr"):
        (folder / sub).mkdir()
    for seed in range(3):
        image = phantom(seed)
        nib.save(nib.Nifti1Image(image, affine), folder / "imagesTr" / f"case_{seed}.nii.gz")
        label = (image > 300).astype(np.uint8)  # the ellipsoid (400 above noise of σ = 20)
        nib.save(nib.Nifti1Image(label, affine), folder / "labelsTr" / f"case_{seed}.nii.gz")
    return folder


def free_port() -> int:
    from backend.local.server import free_port as pick

    return pick()


def wait_for(predicate, timeout_s: float, what: str, process: subprocess.Popen, log: Path):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if process.poll() is not None:
            pytest.fail(
                f"the main job exited with {process.returncode} before {what}:\n{tail(log)}"
            )
        time.sleep(1.0)
    pytest.fail(f"no {what} within {timeout_s:.0f} s:\n{tail(log)}")


def tail(path: Path, lines: int = 40) -> str:
    return (
        "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""
    )


@pytest.fixture(scope="module")
def launched(volumes, tmp_path_factory):
    """The main job running on free ports; stopped with Ctrl-C (SIGINT) at the end."""
    from backend.local import server as local_server

    try:
        local_server.ensure_label_studio()
    except local_server.LabelStudioInstallError as error:  # no network: nothing to launch
        pytest.skip(str(error))
    workdir = tmp_path_factory.mktemp("launch")
    ls_port, backend_port = free_port(), free_port()
    out = workdir / "stdout.log"
    env = dict(
        os.environ,
        SUGFW_GRID="128",
        SUGFW_DEVICE="cpu",
        SUGFW_DEBOUNCE_S="0.5",
        PYTHONUNBUFFERED="1",
    )
    env.pop("SUGFW_TEST_DATA", None)  # the main job's own test set, not one from outside
    command = [
        sys.executable,
        "-m",
        "backend.local.launch",
        str(volumes),
        "--workdir",
        str(workdir),
        "--ls-port",
        str(ls_port),
        "--backend-port",
        str(backend_port),
        "--slice-step",
        str(SLICE_STEP),
        "--limit",
        str(N_SLICES),
        "--k",
        "1",
        "--budget",
        "2",
        "--test-volumes",
        "1",
    ]
    with out.open("wb") as handle:
        process = subprocess.Popen(
            command,
            cwd=REPO,
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield process, workdir, out, ls_port, backend_port
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)  # what Ctrl-C sends: both servers are stopped
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)


def test_main_job_prints_the_url_and_login_and_publishes_the_queue(launched):
    from label_studio_sdk.client import LabelStudio

    process, workdir, out, ls_port, backend_port = launched
    printed = wait_for(
        lambda: re.search(
            r"Label Studio: (http://127\.0\.0\.1:(\d+)/projects/(\d+)/data)\n"
            r"login: (\S+) / password in (\S+)\n",
            out.read_text(errors="replace"),
        ),
        START_S,
        "URL and login on stdout",
        process,
        out,
    )
    url, port, project_id, username, credentials_path = printed.groups()
    assert int(port) == ls_port
    assert Path(credentials_path) == workdir / "credentials.json"
    credentials = json.loads(Path(credentials_path).read_text())
    assert credentials["username"] == username
    assert stat.S_IMODE(Path(credentials_path).stat().st_mode) == 0o600  # the password is private
    assert f"backend: http://127.0.0.1:{backend_port}" in out.read_text()
    # The last labelled volume is the backend's test set, never imported (checked below).
    test_data = workdir / "test-data"
    assert f"tested on {test_data})" in out.read_text()
    assert sorted(p.name for p in (test_data / "imagesTr").iterdir()) == ["case_2.nii.gz"]
    assert sorted(p.name for p in (test_data / "labelsTr").iterdir()) == ["case_2.nii.gz"]
    assert f"'test_data': '{test_data}'" in (workdir / "backend.log").read_text()
    plot = httpx.get(f"http://127.0.0.1:{backend_port}/metrics/plot", timeout=60.0)
    assert plot.status_code == 200 and plot.content[:8] == b"\x89PNG\r\n\x1a\n"

    # The printed page answers once logged in with the printed login.
    with httpx.Client(base_url=f"http://127.0.0.1:{ls_port}", timeout=30.0) as browser:
        login_page = browser.get("/user/login/")
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', login_page.text).group(1)
        browser.post(
            "/user/login/",
            data={
                "email": username,
                "password": credentials["password"],
                "csrfmiddlewaretoken": token,
            },
            headers={"Referer": f"http://127.0.0.1:{ls_port}/user/login/"},
        )
        page = browser.get(url.removeprefix(f"http://127.0.0.1:{ls_port}"), follow_redirects=False)
        assert page.status_code == 200, (page.status_code, page.headers.get("location"))

    ls = LabelStudio(base_url=f"http://127.0.0.1:{ls_port}", api_key=credentials["token"])
    (project,) = [p for p in ls.projects.list() if p.title == "SUGFW"]
    assert project.id == int(project_id)
    tasks = sorted(ls.tasks.list(project=project.id), key=lambda task: task.id)
    assert len(tasks) == N_SLICES
    # Every SLICE_STEP-th axial slice of each imported volume (not case_2), in volume order.
    assert sorted((t.data["case_id"], t.data["slice_index"]) for t in tasks) == [
        (case, index) for case in ("case_0", "case_1") for index in range(0, DEPTH, SLICE_STEP)
    ]
    assert [backend.url for backend in ls.ml.list(project=project.id)] == [
        f"http://127.0.0.1:{backend_port}"
    ]

    def published():
        current = ls.projects.get(id=project.id)
        version = current.model_version or ""
        if not version.startswith("sugfw-litemedsam-"):
            return None
        predictions = [
            p for p in ls.predictions.list(project=project.id) if p.model_version == version
        ]
        return (current, predictions) if len(predictions) == N_SLICES else None

    current, predictions = wait_for(
        published, QUEUE_S, "published queue", process, workdir / "backend.log"
    )
    assert current.sampling == "Uncertainty sampling"
    assert sorted(p.task for p in predictions) == [t.id for t in tasks]  # one per task
    assert sorted(p.score for p in predictions) == [rank / N_SLICES for rank in range(N_SLICES)]
    head = min(predictions, key=lambda p: p.score).task
    next_task = httpx.get(
        f"http://127.0.0.1:{ls_port}/api/projects/{project.id}/next",
        headers={"Authorization": f"Token {credentials['token']}"},
        timeout=30.0,
    )
    assert next_task.json()["id"] == head  # the queue's head first

    # Ctrl-C stops both servers and exits cleanly.
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=60) == 0
    for port in (ls_port, backend_port):
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=2.0)
