"""The one way the backend connects to Label Studio: an SDK client and authenticated raw requests.

Label Studio takes two kinds of API key: a legacy token, sent as ``Token <key>``, and a personal
access token, a JWT refresh token exchanged at ``POST /api/token/refresh/`` for a short-lived
access token sent as ``Bearer <access>``. ``LabelStudioAuth`` does that exchange (caching the
access token until shortly before it expires) for the requests the SDK has no method for: image
downloads and multipart file uploads. Everything else goes through the SDK client.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx
import jwt

from backend.labelstudio.image_policy import ImageFetchError
from backend.redact import redact_url
from sugfw.errors import InvalidInputError

REFRESH_PATH = "api/token/refresh/"
EXPIRY_MARGIN_S = 30.0
"""An access token this close to expiry is replaced before use."""


class LabelStudioAuth:
    """Authorization header for Label Studio from a legacy token or a personal access token."""

    def __init__(self, url: str, api_key: str, http: httpx.Client) -> None:
        self.url = url.rstrip("/")
        self._api_key = api_key
        self._http = http
        self._lock = threading.Lock()
        self._access: str | None = None
        self._access_expires = 0.0
        claims = _jwt_claims(api_key)
        self.legacy = claims is None
        if claims is not None:
            expires = claims.get("exp")
            if expires is None:
                raise InvalidInputError(
                    "the API key is a JWT without an expiry: create a new token"
                )
            if float(expires) < time.time():
                raise InvalidInputError("the API key (a personal access token) has expired")

    def headers(self) -> dict[str, str]:
        """``{"Authorization": ...}`` for the next request."""
        if self.legacy:
            return {"Authorization": f"Token {self._api_key}"}
        with self._lock:
            if self._access is None or time.time() > self._access_expires - EXPIRY_MARGIN_S:
                self._access, self._access_expires = self._exchange()
            return {"Authorization": f"Bearer {self._access}"}

    def _exchange(self) -> tuple[str, float]:
        try:
            response = self._http.post(
                f"{self.url}/{REFRESH_PATH}", json={"refresh": self._api_key}
            )
        except httpx.HTTPError as error:
            raise InvalidInputError(
                f"cannot reach {redact_url(self.url)} to exchange the API key: "
                f"{type(error).__name__}"
            ) from None
        if response.status_code != 200:
            raise InvalidInputError(
                f"Label Studio refused the API key exchange: HTTP {response.status_code} "
                f"{response.text[:200]}"
            )
        try:
            access = str(response.json()["access"])
        except (ValueError, KeyError, TypeError):
            raise InvalidInputError(
                "Label Studio's token exchange answered without an access token"
            ) from None
        claims = _jwt_claims(access) or {}
        return access, float(claims.get("exp", time.time() + 60.0))


class Connection:
    """An SDK client (``sdk``; None from ``open_requests``) and authenticated raw requests to the
    same Label Studio."""

    def __init__(self, sdk: Any, auth: LabelStudioAuth, http: httpx.Client) -> None:
        self.sdk = sdk
        self.auth = auth
        self.http = http

    @property
    def url(self) -> str:
        return self.auth.url

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """``method`` on ``<url>/<path>`` with the API key's authorization header."""
        headers = {**kwargs.pop("headers", {}), **self.auth.headers()}
        return self.http.request(
            method, f"{self.url}/{path.lstrip('/')}", headers=headers, **kwargs
        )

    def close(self) -> None:
        self.http.close()


def open_requests(
    url: str,
    api_key: str,
    timeout_s: float = 60.0,
    transport: httpx.BaseTransport | None = None,
) -> Connection:
    """Authenticated raw requests to Label Studio at ``url``, without the SDK client (which is
    slow to import); a bad or expired key is an ``InvalidInputError``."""
    http = httpx.Client(timeout=timeout_s, transport=transport)
    try:
        auth = LabelStudioAuth(url, api_key, http)
    except InvalidInputError:
        http.close()
        raise
    return Connection(None, auth, http)


def connect(
    url: str,
    api_key: str,
    timeout_s: float = 60.0,
    transport: httpx.BaseTransport | None = None,
) -> Connection:
    """Connect to Label Studio at ``url``; a bad or expired key is an ``InvalidInputError``
    that names the server, never the key."""
    from label_studio_sdk import LabelStudio
    from label_studio_sdk.core.api_error import ApiError

    try:
        connection = open_requests(url, api_key, timeout_s, transport)
    except InvalidInputError as error:
        raise InvalidInputError(f"Label Studio at {redact_url(url)}: {error}") from None
    try:
        connection.sdk = LabelStudio(
            base_url=url.rstrip("/"), api_key=api_key, httpx_client=connection.http
        )
    except ApiError as error:
        connection.close()
        raise InvalidInputError(
            f"Label Studio at {redact_url(url)} refused the API key: HTTP {error.status_code} "
            f"{error.body}"
        ) from None
    return connection


def label_studio_auth(
    url: str, api_key: str, timeout_s: float = 30.0, transport: httpx.BaseTransport | None = None
) -> Callable[[], Mapping[str, str]]:
    """Authorization headers for image downloads from Label Studio (a personal access token is
    exchanged and the access token refreshed as it expires); an unusable key is an
    ``ImageFetchError``.

    An expired personal access token is refused here, before any request.
    """
    try:
        auth = open_requests(url, api_key, timeout_s, transport).auth
    except InvalidInputError as error:
        raise ImageFetchError(f"LABEL_STUDIO_API_KEY is not usable: {error}") from None

    def headers() -> Mapping[str, str]:
        try:
            return auth.headers()
        except InvalidInputError as error:  # the exchange failed
            raise ImageFetchError(
                f"cannot exchange LABEL_STUDIO_API_KEY for an access token: {error}"
            ) from None

    return headers


def _jwt_claims(token: str) -> dict[str, Any] | None:
    """The claims of a JWT (unverified: the server checks it), or ``None`` for a legacy token."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False, "verify_exp": False})
    except jwt.InvalidTokenError:
        return None
    return claims if isinstance(claims, dict) else None
