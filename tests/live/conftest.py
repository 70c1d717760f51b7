"""Fixtures of the live tests: a real Label Studio server, started once a session."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

LABEL_STUDIO_START_S = 180.0


@dataclass(frozen=True)
class LabelStudioServer:
    url: str
    token: str
    """Legacy API token of the admin user (sent as ``Authorization: Token <token>``)."""
    files_root: Path
    """LOCAL_FILES_DOCUMENT_ROOT of the server."""
    log_path: Path


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory) -> Iterator[LabelStudioServer]:
    """A fresh Label Studio (SQLite, own data dir) on 127.0.0.1, stopped at the end of the
    session."""
    from backend.local import server as local_server

    try:
        executable = local_server.ensure_label_studio()
    except local_server.LabelStudioInstallError as error:  # no network: nothing to test against
        pytest.skip(str(error))
    base = tmp_path_factory.mktemp("label-studio")
    files_root = base / "files"
    files_root.mkdir()
    token = secrets.token_hex(20)
    port = local_server.free_port()
    env = local_server.server_environment(
        base / "data", files_root, "admin@sugfw.test", secrets.token_urlsafe(12), token
    )
    log_path = base / "server.log"
    url = f"http://127.0.0.1:{port}"
    server = local_server.start_label_studio(executable, env, port, base, log_path)
    try:
        try:
            local_server.wait_for_health(url, server, log_path, LABEL_STUDIO_START_S)
        except local_server.LabelStudioStartError as error:
            pytest.fail(str(error))
        yield LabelStudioServer(url=url, token=token, files_root=files_root, log_path=log_path)
    finally:
        local_server.stop_process_group(server)
