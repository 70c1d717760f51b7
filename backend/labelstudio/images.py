"""Fetch the image of a Label Studio task as a 2-D float32 slice.

Where an image can live, by the URL in ``task["data"][image_key]``:
- ``/data/upload/...`` and ``/storage-data/uploaded/...``: files uploaded to Label Studio, fetched
  from it with the API key (legacy tokens go out as ``Token <key>``; a personal access token is a
  JWT refresh token, exchanged for an access token (``backend.labelstudio.connection``) and sent as ``Bearer``);
- ``/data/local-files/?d=<path>``: read from LOCAL_FILES_DOCUMENT_ROOT when set (never outside
  it), else fetched from Label Studio like an upload;
- ``s3://``, ``gs://``, ``azure-blob://``: through Label Studio's presign endpoint for the task;
- absolute ``http(s)://`` URLs: fetched directly; the key is only sent to Label Studio's own host;
- ``data:`` URLs: decoded in place.
"""

from __future__ import annotations

import base64
import binascii
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import parse_qs, unquote_to_bytes, urlsplit

import httpx
import numpy as np

from backend.redact import redact_url
from sugfw.data import load_image_file
from sugfw.errors import InvalidInputError, SugfwError

AuthHeaders = Callable[[], Mapping[str, str]]
MAX_IMAGE_BYTES = 512 * 1024 * 1024
_CLOUD_SCHEMES = ("s3", "gs", "azure-blob")


class ImageFetchError(SugfwError):
    """A task's image could not be found, downloaded or read as a slice."""


def label_studio_auth(
    url: str, api_key: str, timeout_s: float = 30.0, transport: httpx.BaseTransport | None = None
) -> AuthHeaders:
    """Authorization headers for Label Studio (a personal access token is exchanged and the
    access token refreshed as it expires).

    An expired personal access token is refused here, before any request.
    """
    from backend.labelstudio.connection import LabelStudioAuth

    http = httpx.Client(timeout=timeout_s, transport=transport)
    try:
        auth = LabelStudioAuth(url, api_key, http)
    except InvalidInputError as error:
        http.close()
        raise ImageFetchError(f"LABEL_STUDIO_API_KEY is not usable: {error}") from None

    def headers() -> Mapping[str, str]:
        try:
            return auth.headers()
        except InvalidInputError as error:  # the exchange failed
            raise ImageFetchError(
                f"cannot exchange LABEL_STUDIO_API_KEY for an access token: {error}"
            ) from None

    return headers


class ImageFetcher:
    def __init__(
        self,
        label_studio_url: str | None = None,
        auth: AuthHeaders | None = None,
        local_files_root: Path | None = None,
        timeout_s: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        max_bytes: int = MAX_IMAGE_BYTES,
    ) -> None:
        self.label_studio_url = label_studio_url.rstrip("/") if label_studio_url else None
        self.auth = auth
        self.local_files_root = local_files_root.resolve() if local_files_root is not None else None
        self.max_bytes = max_bytes
        # Redirects are followed (presigned cloud URLs redirect); httpx drops Authorization when a
        # redirect leaves the original host.
        self.client = httpx.Client(timeout=timeout_s, follow_redirects=True, transport=transport)

    def close(self) -> None:
        self.client.close()

    def fetch(self, task: Mapping[str, Any], image_key: str) -> np.ndarray:
        """The task's image as a float32 (H, W) slice, or ImageFetchError naming the task and URL."""
        task_id = task.get("id", "?") if isinstance(task, Mapping) else "?"
        url = self.image_url(task, image_key)
        try:
            local = self.local_path(url)
            if local is not None:
                return load_image_file(local)
            return _decode(self._download(url, task_id), url)
        except InvalidInputError as error:
            raise ImageFetchError(f"task {task_id}: image {redact_url(url)} is not a usable slice: {error}") from None
        except ImageFetchError as error:
            raise ImageFetchError(f"task {task_id}: image {redact_url(url)}: {error}") from None
        except (ValueError, httpx.InvalidURL) as error:  # e.g. a bad port or IPv6 host
            raise ImageFetchError(f"task {task_id}: image {redact_url(url)} is not a valid URL: {error}") from None

    @staticmethod
    def image_url(task: Mapping[str, Any], image_key: str) -> str:
        task_id = task.get("id", "?") if isinstance(task, Mapping) else "?"
        data = task.get("data") if isinstance(task, Mapping) else None
        url = data.get(image_key) if isinstance(data, Mapping) else None
        if not isinstance(url, str) or not url.strip():
            keys = sorted(data) if isinstance(data, Mapping) else []
            raise ImageFetchError(
                f"task {task_id} has no image under data[{image_key!r}] (data keys: {keys}); "
                f"the labelling config reads the image from ${image_key}"
            )
        return url.strip()

    def local_path(self, url: str) -> Path | None:
        """Where a local-files URL lives on disk, or None when it must be downloaded instead."""
        parts = urlsplit(url)
        if self.local_files_root is None or not parts.path.startswith("/data/local-files"):
            return None
        if parts.netloc and not self._is_label_studio(url):
            return None
        values = parse_qs(parts.query, keep_blank_values=True).get("d")
        relative = values[-1] if values else ""
        if not relative:
            raise ImageFetchError("local-files URL has no ?d=<path>")
        # As Label Studio does, ?d= is always relative to the document root, even with a leading "/".
        candidate = (self.local_files_root / PurePosixPath(relative.lstrip("/"))).resolve()
        if not candidate.is_relative_to(self.local_files_root):
            raise ImageFetchError(
                f"local-files path {relative!r} resolves outside LOCAL_FILES_DOCUMENT_ROOT ({self.local_files_root}); refused"
            )
        if not candidate.is_file():
            raise ImageFetchError(f"local file {candidate} does not exist under LOCAL_FILES_DOCUMENT_ROOT")
        return candidate

    def _download(self, url: str, task_id: Any) -> bytes:
        if url.startswith("data:"):
            return _data_url_bytes(url)
        target, authenticated = self._resolve(url, task_id)
        headers = dict(self.auth()) if authenticated and self.auth is not None else {}
        try:
            with self.client.stream("GET", target, headers=headers) as response:
                if response.status_code != 200:
                    raise ImageFetchError(_status_message(response.status_code, authenticated))
                chunks, size = [], 0
                for chunk in response.iter_bytes():
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise ImageFetchError(f"larger than {self.max_bytes} bytes; refused")
                    chunks.append(chunk)
                return b"".join(chunks)
        except httpx.TimeoutException:
            raise ImageFetchError(f"no answer within {self.client.timeout.read} s") from None
        except httpx.HTTPError as error:
            raise ImageFetchError(f"cannot be downloaded: {type(error).__name__}: {error}") from None

    def _resolve(self, url: str, task_id: Any) -> tuple[str, bool]:
        """The absolute URL to GET, and whether it goes to Label Studio (and so carries the key)."""
        parts = urlsplit(url)
        if parts.scheme in ("http", "https"):
            return url, self._is_label_studio(url)
        if parts.scheme in _CLOUD_SCHEMES:
            encoded = base64.urlsafe_b64encode(url.encode()).decode()
            return self._on_label_studio(f"/tasks/{task_id}/presign/?fileuri={encoded}"), True
        if parts.scheme:
            raise ImageFetchError(f"URL scheme {parts.scheme!r} is not supported")
        path = url if url.startswith("/") else "/" + url
        if path.startswith("/upload/"):
            path = "/data" + path  # older exports store "upload/<project>/<file>"
        return self._on_label_studio(path), True

    def _on_label_studio(self, path: str) -> str:
        if self.label_studio_url is None:
            raise ImageFetchError("is served by Label Studio, but LABEL_STUDIO_URL is not set")
        if self.auth is None:
            raise ImageFetchError("is served by Label Studio, but LABEL_STUDIO_API_KEY is not set")
        return self.label_studio_url + path

    def _is_label_studio(self, url: str) -> bool:
        if self.label_studio_url is None:
            return False
        ours, theirs = urlsplit(self.label_studio_url), urlsplit(url)
        return (ours.scheme, ours.netloc.lower()) == (theirs.scheme, theirs.netloc.lower())


def _status_message(status: int, authenticated: bool) -> str:
    if status in (401, 403) and authenticated:
        return f"Label Studio refused the API key (HTTP {status}); check LABEL_STUDIO_API_KEY"
    if status == 404:
        return "not found (HTTP 404)"
    return f"download failed with HTTP {status}"


def _data_url_bytes(url: str) -> bytes:
    header, _, payload = url.partition(",")
    try:
        if header.endswith(";base64"):
            return base64.b64decode(payload, validate=True)
        return unquote_to_bytes(payload)
    except (binascii.Error, ValueError) as error:
        raise ImageFetchError(f"data URL cannot be decoded: {error}") from None


def _decode(content: bytes, url: str) -> np.ndarray:
    # Through a file, so downloaded images obey exactly the rules of `sugfw score` (grey modes,
    # bit depth, no alpha); the suffix only helps people reading a leftover temp file.
    suffix = PurePosixPath(urlsplit(url).path).suffix[:10] if not url.startswith("data:") else ".img"
    with tempfile.NamedTemporaryFile(suffix=suffix or ".img") as handle:
        handle.write(content)
        handle.flush()
        try:
            return load_image_file(handle.name)
        except InvalidInputError as error:
            # The temp path means nothing to the user: drop it from the message.
            raise InvalidInputError(str(error).replace(handle.name, "downloaded file")) from None
