"""Container health probe: exit 0 when the backend's ``GET /health`` answers ``{"status": "UP"}``.

The image has no curl; Python is already there. With Basic auth on (BASIC_AUTH_USER/_PASS), every
route, /health included, needs the credentials, so the probe sends them.
"""

from __future__ import annotations

import base64
import json
import os
import sys
import urllib.request

DEFAULT_URL = "http://127.0.0.1:9090/health"


def healthy(url: str, user: str | None, password: str | None, timeout_s: float = 5.0) -> bool:
    request = urllib.request.Request(url)
    if user:
        token = base64.b64encode(f"{user}:{password or ''}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return json.load(response).get("status") == "UP"
    except (
        OSError,
        ValueError,
        AttributeError,
    ):  # refused, timeout, HTTP error status, not a JSON object
        return False


if __name__ == "__main__":
    env = os.environ
    sys.exit(
        0
        if healthy(
            env.get("SUGFW_HEALTH_URL", DEFAULT_URL),
            env.get("BASIC_AUTH_USER"),
            env.get("BASIC_AUTH_PASS"),
        )
        else 1
    )
