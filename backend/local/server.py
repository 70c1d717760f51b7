"""A local Label Studio server in its own virtual environment (SQLite, 127.0.0.1).

Used by the main job (``backend.local.launch``) and by the integration tests. The server pins its
own
numpy, Pillow and SDK, so it never shares the backend's environment.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from sugfw.errors import SugfwError

LABEL_STUDIO_VERSION = "1.23.2"
DEFAULT_VENV = Path(__file__).resolve().parents[2] / ".venv-ls"


class LabelStudioInstallError(SugfwError):
    """label-studio could not be installed (typically: no network)."""


class LabelStudioStartError(SugfwError):
    """The server exited or did not answer /health in time."""


def ensure_label_studio(venv: Path = DEFAULT_VENV) -> Path:
    """The ``label-studio`` executable of ``venv``, installed there on first use."""
    executable = venv / "bin" / "label-studio"
    if executable.exists():
        return executable
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    install = subprocess.run(
        [
            str(venv / "bin" / "pip"),
            "install",
            "--quiet",
            f"label-studio=={LABEL_STUDIO_VERSION}",
            # sentry-sdk 3 dropped an option Label Studio 1.23 passes at start-up.
            "sentry-sdk<3",
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if install.returncode != 0 or not executable.exists():
        shutil.rmtree(venv, ignore_errors=True)  # a half-installed venv would pass the check above
        tail = (install.stderr or install.stdout).strip().splitlines()[-3:]
        raise LabelStudioInstallError(
            f"cannot install label-studio=={LABEL_STUDIO_VERSION} into {venv}: {' | '.join(tail)}"
        )
    return executable


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def server_environment(
    data_dir: Path,
    files_root: Path,
    username: str,
    password: str,
    token: str,
    venv: Path = DEFAULT_VENV,
) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")
    }
    env.update(
        {
            "PATH": f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
            "LABEL_STUDIO_BASE_DATA_DIR": str(data_dir),
            "LABEL_STUDIO_USERNAME": username,
            "LABEL_STUDIO_PASSWORD": password,
            "LABEL_STUDIO_USER_TOKEN": token,
            # Must be set when the organisation is created.
            "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
            # Both needed for a backend on 127.0.0.1; with only the first its webhook is not
            # created.
            "LABEL_STUDIO_ML_BLOCK_LOCAL_IP": "false",
            "LABEL_STUDIO_SSRF_PROTECTION_ENABLED": "false",
            "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
            "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(files_root),
            "LABEL_STUDIO_COLLECT_ANALYTICS": "false",
            # No error reporting to Sentry; with an empty DSN Label Studio also skips
            # sentry_sdk.init, which fails under sentry-sdk 3 in a venv made before the pin.
            "SENTRY_DSN": "",
            # Label Studio recounts every task's counters after each prediction import unless
            # this flag is on: 4.6 s → 0.17 s per import at 5,000 tasks (docs/benchmarks.md,
            # "Backend at project scale").
            "fflag_fix_back_4620_memory_efficient_predictions_import_08012025_short": "true",
            "FRONTEND_SENTRY_DSN": "",
            "LABEL_STUDIO_LATEST_VERSION_CHECK": "false",
        }
    )
    return env


def start_label_studio(
    executable: Path, env: dict[str, str], port: int, workdir: Path, log_path: Path
) -> subprocess.Popen:
    with log_path.open("ab") as log_file:
        return subprocess.Popen(
            [
                str(executable),
                "start",
                "--no-browser",
                "--internal-host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            env=env,
            cwd=workdir,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the server's children stop with it
        )


def wait_for_health(
    url: str, process: subprocess.Popen, log_path: Path, timeout_s: float = 180.0
) -> None:
    """Block until ``url``/health answers UP; raise if the process dies or time runs out."""
    deadline = time.monotonic() + timeout_s
    while True:
        if process.poll() is not None:
            raise LabelStudioStartError(
                f"{url}: process exited with {process.returncode}:\n{log_tail(log_path)}"
            )
        try:
            if httpx.get(f"{url}/health", timeout=2.0).json().get("status") == "UP":
                return
        except (httpx.HTTPError, ValueError):
            pass
        if time.monotonic() > deadline:
            raise LabelStudioStartError(
                f"{url} did not answer /health within {timeout_s:.0f} s:\n{log_tail(log_path)}"
            )
        time.sleep(1.0)


def stop_process_group(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def log_tail(path: Path, lines: int = 30) -> str:
    return (
        "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""
    )
