"""The one way the backend builds a ``label-studio-sdk`` client."""

from __future__ import annotations

from typing import Any

import httpx

from backend.redact import redact_url
from sugfw.errors import InvalidInputError


def connect_sdk(
    url: str,
    api_key: str,
    timeout_s: float = 60.0,
    transport: httpx.BaseTransport | None = None,
    http: httpx.Client | None = None,
) -> Any:
    """A ``LabelStudio`` client for ``url`` (a legacy token or a personal access token).

    ``http`` is the HTTP client to send through (the caller closes it); by default one is made
    with ``timeout_s`` and ``transport``.

    A personal access token is checked when the client is made; an expired or malformed one is
    an ``InvalidInputError`` that names the server, never the key.
    """
    from label_studio_sdk import LabelStudio
    from label_studio_sdk.core.api_error import ApiError

    owned = http is None
    http = http or httpx.Client(timeout=timeout_s, transport=transport)
    try:
        return LabelStudio(base_url=url.rstrip("/"), api_key=api_key, httpx_client=http)
    except ApiError as error:
        if owned:
            http.close()
        raise InvalidInputError(
            f"Label Studio at {redact_url(url)} refused the API key: HTTP {error.status_code} "
            f"{error.body}"
        ) from None
