"""The main job: a local Label Studio plus this backend, a project with slices, connected.

    python -m backend.local.launch VOLUMES... [--workdir runs/labelstudio] [--slice-step 11]
    [--limit 40] [--test-volumes 2]

Starts Label Studio (its own venv, SQLite, 127.0.0.1) and the backend, creates the project "SUGFW"
from ``label_config.xml``, imports the volumes' slices (first run only), connects the backend
(which then scores every slice and orders the queue), prints the URL and login, and keeps both
servers running until interrupted. Rerunning with the same ``--workdir`` reuses the server data,
the login and the score cache.

Metrics out of the box: the last ``--test-volumes`` volumes that have a label map (MSD / nnU-Net
``labelsTr/<case>.nii.gz`` beside ``imagesTr/``) are held out of the import and linked under
``<workdir>/test-data``, which the backend gets as ``SUGFW_TEST_DATA``: every training run is then
tested on whole volumes no annotator sees (DSC and HD95 in ``/metrics``, the learning curve at
``/metrics/plot``). They are never tasks, so SAM never scores them and the queue is ready as soon
as without them. A ``SUGFW_TEST_DATA`` already set is used instead, and nothing is held out.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from backend.labelstudio.connection import Connection, connect
from backend.labelstudio.import_volumes import find_volumes, import_volumes
from backend.local import server as local_server
from sugfw.msd import case_id_of, label_volume_of

log = logging.getLogger("sugfw.launch")
REPO = Path(__file__).resolve().parents[2]
PROJECT_TITLE = "SUGFW"
TEST_DATA_DIR = "test-data"
TEST_DATA_ENV = "SUGFW_TEST_DATA"


def load_credentials(path: Path) -> dict[str, str]:
    """The admin login and API token, made once per workdir and kept private (mode 600)."""
    if path.exists():
        return json.loads(path.read_text())
    credentials = {
        "username": "admin@sugfw.local",
        "password": secrets.token_urlsafe(12),
        "token": secrets.token_hex(20),
    }
    path.touch(mode=0o600)
    path.write_text(json.dumps(credentials))
    return credentials


def hold_out_test_volumes(
    volumes: Sequence[Path], count: int, exclude: set[str] | None = None
) -> tuple[list[Path], list[tuple[Path, Path]]]:
    """(volumes to import, (image, label) pairs held out): the last ``count`` volumes with a label
    map, never all of them (one at least is imported), never one whose case id is in
    ``exclude`` (cases a project already holds as tasks)."""
    exclude = exclude or set()
    labelled = [
        (path, label)
        for path in volumes
        if case_id_of(path) not in exclude and (label := label_volume_of(path)) is not None
    ]
    count = max(0, min(count, len(labelled), len(volumes) - 1))
    held = labelled[len(labelled) - count :] if count else []
    held_paths = {path for path, _ in held}
    return [path for path in volumes if path not in held_paths], held


def link_test_data(pairs: Sequence[tuple[Path, Path]], folder: Path) -> Path:
    """``folder`` rebuilt as an MSD-layout dataset of ``pairs`` (``imagesTr/<case>``,
    ``labelsTr/<case>``), by symbolic links where the file system allows them, else copies."""
    shutil.rmtree(folder, ignore_errors=True)
    for sub in ("imagesTr", "labelsTr"):
        (folder / sub).mkdir(parents=True)
    for image, label in pairs:
        case = case_id_of(image)
        for source, sub in ((image, "imagesTr"), (label, "labelsTr")):
            suffix = ".nii.gz" if source.name.lower().endswith(".nii.gz") else ".nii"
            target = folder / sub / f"{case}{suffix}"
            try:
                target.symlink_to(source.resolve())
            except OSError:
                shutil.copy2(source, target)
    return folder


def existing_case_ids(connection: Connection, project_id: int) -> set[str]:
    """``data.case_id`` of every task of the project (one pass over its task list)."""
    return {
        str(task.data["case_id"])
        for task in connection.sdk.tasks.list(project=project_id)
        if isinstance(task.data, dict) and "case_id" in task.data
    }


def prepare_test_data(
    args: argparse.Namespace, volumes: Sequence[Path], exclude: set[str] | None = None
) -> tuple[list[Path], Path | None]:
    """(volumes to import, ``SUGFW_TEST_DATA`` for the backend or None), as the module docstring
    says: a folder of held-out labelled volumes under the workdir, or the environment's own."""
    configured = os.environ.get(TEST_DATA_ENV, "").strip()
    if configured:
        log.info("test set: %s=%s (nothing held out of the import)", TEST_DATA_ENV, configured)
        return list(volumes), Path(configured)
    train, held = hold_out_test_volumes(volumes, args.test_volumes, exclude)
    if not held:
        if args.test_volumes > 0:
            log.warning(
                "no labelled volume (imagesTr/ with labelsTr/) could be held out as a test set; "
                "/metrics will say 'no test set' (mark tasks split=test or set %s)",
                TEST_DATA_ENV,
            )
        return train, None
    if len(held) < args.test_volumes:
        log.warning("only %d volume(s) held out as the test set", len(held))
    folder = link_test_data(held, args.workdir / TEST_DATA_DIR)
    log.info(
        "test set: %d held-out volume(s) %s in %s, never imported",
        len(held),
        ", ".join(case_id_of(image) for image, _ in held),
        folder,
    )
    return train, folder


def backend_environment(ls_url: str, token: str, test_data: Path | None) -> dict[str, str]:
    """The backend's environment: this one, plus where Label Studio is and the test set."""
    env = dict(os.environ, LABEL_STUDIO_URL=ls_url, LABEL_STUDIO_API_KEY=token)
    if test_data is not None:
        env[TEST_DATA_ENV] = str(test_data)
    return env


def start_backend(
    args: argparse.Namespace,
    ls_url: str,
    token: str,
    log_path: Path,
    test_data: Path | None = None,
) -> subprocess.Popen:
    env = backend_environment(ls_url, token, test_data)
    command = [
        sys.executable,
        "-m",
        "backend._wsgi",
        "--host",
        "127.0.0.1",
        "--port",
        str(args.backend_port),
        "--k",
        str(args.k),
        "--budget",
        args.budget,
        "--state-dir",
        str(args.workdir / "backend"),
    ]
    with log_path.open("ab") as log_file:
        return subprocess.Popen(
            command,
            env=env,
            cwd=REPO,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def find_project(connection: Connection) -> int | None:
    existing = [p for p in connection.sdk.projects.list() if p.title == PROJECT_TITLE]
    return existing[0].id if existing else None


def ensure_project(
    connection: Connection, args: argparse.Namespace, volumes: Sequence[Path] | None = None
) -> int:
    """The "SUGFW" project, created with the slices of ``volumes`` (default: all of
    ``args.volumes``) on the first run."""
    existing = find_project(connection)
    if existing is not None:
        return existing
    project = connection.sdk.projects.create(
        title=PROJECT_TITLE, label_config=(REPO / "label_config.xml").read_text()
    )
    report = import_volumes(
        args.volumes if volumes is None else volumes,
        project.id,
        connection,
        slice_step=args.slice_step,
        limit=args.limit,
    )
    log.info("imported %d slices into project %d", len(report.task_ids), project.id)
    return project.id


def ensure_project_and_test_data(
    connection: Connection, args: argparse.Namespace
) -> tuple[int, Path | None]:
    """The project (created and imported on the first run) and the backend's test set, which
    shares no volume with the project's tasks."""
    volumes = find_volumes(args.volumes)
    existing = find_project(connection)
    # A project from an earlier run keeps its tasks: never test on a case it holds.
    exclude = existing_case_ids(connection, existing) if existing is not None else None
    train, test_data = prepare_test_data(args, volumes, exclude)
    return ensure_project(connection, args, train), test_data


def ensure_connected(client, project_id: int, backend_url: str) -> None:
    if not list(client.ml.list(project=project_id)):
        client.ml.create(
            project=project_id, url=backend_url, title="sugfw"
        )  # → /setup → a score job


MAX_BACKEND_RESTARTS = 5
POLL_S = 2.0


def supervise(
    label_studio: subprocess.Popen,
    backend: subprocess.Popen,
    restart_backend: Callable[[], subprocess.Popen],
    ls_log: Path,
    backend_log: Path,
    max_restarts: int = MAX_BACKEND_RESTARTS,
    poll_s: float = POLL_S,
) -> int:
    """Watch both servers until one is lost for good; the exit status for the main job.

    A backend that dies (out of memory, killed) is started again, up to ``max_restarts`` times:
    its jobs resume from the state folder and its scores from the cache, and Label Studio, with
    the annotators' work, keeps running. Label Studio stopping ends the main job.
    """
    restarts = 0
    while True:
        if label_studio.poll() is not None:
            log.error("Label Studio stopped (exit %s); see %s", label_studio.returncode, ls_log)
            return 1
        if backend.poll() is not None:
            if restarts >= max_restarts:
                log.error(
                    "the backend stopped %d times; giving up, see %s", restarts + 1, backend_log
                )
                return 1
            restarts += 1
            log.warning(
                "the backend stopped (exit %s); restarting it (%d of %d), see %s",
                backend.returncode,
                restarts,
                max_restarts,
                backend_log,
            )
            try:
                backend = restart_backend()
            except local_server.LabelStudioStartError as error:
                log.error("the backend did not come back: %s", error)
                continue
        time.sleep(poll_s)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m backend.local.launch",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "volumes",
        nargs="+",
        type=Path,
        help="NIfTI volumes or folders of them (MSD imagesTr/ found)",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=REPO / "runs" / "labelstudio",
        help="server data, logs, login",
    )
    parser.add_argument("--ls-port", type=int, default=8080)
    parser.add_argument("--backend-port", type=int, default=9090)
    parser.add_argument(
        "--slice-step", type=int, default=11, help="import every n-th slice of each volume"
    )
    parser.add_argument("--limit", type=int, default=40, help="import at most this many slices")
    parser.add_argument("--k", type=int, default=4, help="augmented everything-mode runs per slice")
    parser.add_argument("--budget", default="0.1", help="annotations to plan for: count or ratio")
    parser.add_argument(
        "--test-volumes",
        type=int,
        default=2,
        help="hold the last N labelled volumes out of the import as the test set of every "
        f"training run (default 2; 0: none; unused when {TEST_DATA_ENV} is set)",
    )
    args = parser.parse_args(argv)
    if args.test_volumes < 0:
        parser.error(f"--test-volumes {args.test_volumes}: expected 0 or more")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # A shell without job control starts background jobs with SIGINT ignored (`nohup ... &`), and
    # Python then never raises KeyboardInterrupt; Ctrl-C or `kill -INT` must still stop both
    # servers.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args.workdir = args.workdir.resolve()
    (args.workdir / "files").mkdir(parents=True, exist_ok=True)
    credentials = load_credentials(args.workdir / "credentials.json")
    ls_url, backend_url = (
        f"http://127.0.0.1:{args.ls_port}",
        f"http://127.0.0.1:{args.backend_port}",
    )
    log.info(
        "installing/starting Label Studio %s (first start takes a minute)",
        local_server.LABEL_STUDIO_VERSION,
    )
    executable = local_server.ensure_label_studio()
    env = local_server.server_environment(
        args.workdir / "data",
        args.workdir / "files",
        credentials["username"],
        credentials["password"],
        credentials["token"],
    )
    ls_log, backend_log = args.workdir / "label-studio.log", args.workdir / "backend.log"
    processes = [
        local_server.start_label_studio(executable, env, args.ls_port, args.workdir, ls_log)
    ]
    try:
        local_server.wait_for_health(ls_url, processes[0], ls_log)
        connection = connect(ls_url, credentials["token"])
        # The project first: the backend's test set must leave out the volumes it imported.
        project_id, test_data = ensure_project_and_test_data(connection, args)
        processes.append(start_backend(args, ls_url, credentials["token"], backend_log, test_data))
        local_server.wait_for_health(backend_url, processes[1], backend_log, timeout_s=120)
        ensure_connected(connection.sdk, project_id, backend_url)
        tested = f"tested on {test_data}" if test_data is not None else "no test set"
        print(
            f"\nLabel Studio: {ls_url}/projects/{project_id}/data\n"
            f"login: {credentials['username']} / password in {args.workdir / 'credentials.json'}\n"
            f"backend: {backend_url} (log {backend_log}); scoring runs in the background, then "
            f"'Label All Tasks' serves the GSCU queue.\n"
            f"metrics: {backend_url}/metrics and {backend_url}/metrics/plot after each training "
            f"run ({tested}). Ctrl-C stops both servers.",
            flush=True,
        )
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))

        def restart_backend() -> subprocess.Popen:
            process = start_backend(args, ls_url, credentials["token"], backend_log, test_data)
            processes[1] = process  # stopped with the others on the way out
            try:
                local_server.wait_for_health(backend_url, process, backend_log, timeout_s=120)
            except local_server.LabelStudioStartError:
                local_server.stop_process_group(process)  # never two workers at once
                raise
            return process

        return supervise(processes[0], processes[1], restart_backend, ls_log, backend_log)
    except KeyboardInterrupt:
        return 0
    finally:
        for process in processes:
            local_server.stop_process_group(process)


if __name__ == "__main__":
    sys.exit(main())
