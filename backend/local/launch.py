"""The main job: a local Label Studio plus this backend, a project with slices, connected.

    python -m backend.local.launch VOLUMES... [--workdir runs/labelstudio] [--slice-step 11]
    [--limit 40]

Starts Label Studio (its own venv, SQLite, 127.0.0.1) and the backend, creates the project "SUGFW"
from ``label_config.xml``, imports the volumes' slices (first run only), connects the backend
(which then scores every slice and orders the queue), prints the URL and login, and keeps both
servers running until interrupted. Rerunning with the same ``--workdir`` reuses the server data,
the login and the score cache.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from backend.labelstudio.connection import Connection, connect
from backend.labelstudio.import_volumes import import_volumes
from backend.local import server as local_server

log = logging.getLogger("sugfw.launch")
REPO = Path(__file__).resolve().parents[2]
PROJECT_TITLE = "SUGFW"


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


def start_backend(
    args: argparse.Namespace, ls_url: str, token: str, log_path: Path
) -> subprocess.Popen:
    env = dict(os.environ, LABEL_STUDIO_URL=ls_url, LABEL_STUDIO_API_KEY=token)
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


def ensure_project(connection: Connection, args: argparse.Namespace) -> int:
    """The "SUGFW" project, created with its slices on the first run."""
    client = connection.sdk
    existing = [p for p in client.projects.list() if p.title == PROJECT_TITLE]
    if existing:
        return existing[0].id
    project = client.projects.create(
        title=PROJECT_TITLE, label_config=(REPO / "label_config.xml").read_text()
    )
    report = import_volumes(
        args.volumes, project.id, connection, slice_step=args.slice_step, limit=args.limit
    )
    log.info("imported %d slices into project %d", len(report.task_ids), project.id)
    return project.id


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
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
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
        processes.append(start_backend(args, ls_url, credentials["token"], backend_log))
        local_server.wait_for_health(backend_url, processes[1], backend_log, timeout_s=120)
        connection = connect(ls_url, credentials["token"])
        project_id = ensure_project(connection, args)
        ensure_connected(connection.sdk, project_id, backend_url)
        print(
            f"\nLabel Studio: {ls_url}/projects/{project_id}/data\n"
            f"login: {credentials['username']} / password in {args.workdir / 'credentials.json'}\n"
            f"backend: {backend_url} (log {backend_log}); scoring runs in the background, then "
            f"'Label All Tasks' serves the GSCU queue. Ctrl-C stops both servers.",
            flush=True,
        )
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))

        def restart_backend() -> subprocess.Popen:
            process = start_backend(args, ls_url, credentials["token"], backend_log)
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
