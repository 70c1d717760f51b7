"""Fetch the image of a Label Studio task as a 2-D float32 slice.

Where an image can live, by the URL in ``task["data"][image_key]``:
- ``/data/upload/...`` and ``/storage-data/uploaded/...``: files uploaded to Label Studio, fetched
  from it with the API key (legacy tokens go out as ``Token <key>``; a personal access token is a
  JWT refresh token, exchanged for an access token (``backend.labelstudio.connection``) and sent as
  ``Bearer``);
- ``/data/local-files/?d=<path>``: read from LOCAL_FILES_DOCUMENT_ROOT when set (never outside
  it), else fetched from Label Studio like an upload;
- ``s3://``, ``gs://``, ``azure-blob://``: through Label Studio's presign endpoint for the task;
- absolute ``http(s)://`` URLs: fetched directly; the key is only sent to Label Studio's own host;
- ``data:`` URLs: decoded in place.

Task data is user input and the key is an admin's: with the key, only Label Studio's media paths
are fetched (``address_guard.LABEL_STUDIO_MEDIA_PATHS``: uploads, local files and a task's presign
endpoint, the task id an integer), never its API (``/api/projects/1/next`` would lock a task for
the admin); every other host and address is checked by ``backend.labelstudio.address_guard``.
Only PNG, JPEG and TIFF are decoded (``backend.labelstudio.image_decode``), each at most
``max_pixels`` and with sides at most ``MAX_ASPECT_RATIO`` apart (an 8 × 5000 strip leaves no
pixel of its short side on the model's canvas); the limits are an ``ImagePolicy``
(``backend.labelstudio.image_policy``).
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import numpy as np

from backend.labelstudio.address_guard import (
    Pins,
    Resolver,
    default_port,
    host_entry,
    host_listed,
    is_media_path,
    origin,
    pinned_transport,
    refused_address,
    resolve_host,
)
from backend.labelstudio.image_decode import check_pixels, data_url_bytes, decode_slice
from backend.labelstudio.image_policy import ImageFetchError, default_policy
from backend.redact import install_url_redaction, redact_url
from sugfw.data import load_image_file
from sugfw.errors import InvalidInputError

AuthHeaders = Callable[[], Mapping[str, str]]
MAX_REDIRECTS = 5
_CLOUD_SCHEMES = ("s3", "gs", "azure-blob")


install_url_redaction()  # httpx logs request URLs, presigned signatures included


class ImageFetcher:
    """Fetches task images; absolute URLs only from Label Studio or an allow-listed host.

    Before any connection, the target host is resolved and every address checked: loopback,
    private, link-local, multicast and reserved addresses are refused (private and loopback ones
    are allowed for listed hosts with ``allow_private``), except for Label Studio's own origin, the
    configured server. Redirects are followed by hand, each target checked the same way (a redirect
    issued by Label Studio itself, e.g. to a presigned cloud URL, may leave the host list, never the
    address rules). Caps: ``max_bytes``, ``max_pixels`` and ``deadline_s`` over the whole download.
    """

    def __init__(
        self,
        label_studio_url: str | None = None,
        auth: AuthHeaders | None = None,
        local_files_root: Path | None = None,
        timeout_s: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        max_bytes: int | None = None,
        allowed_hosts: Iterable[str] | None = None,
        allow_private: bool | None = None,
        max_pixels: int | None = None,
        deadline_s: float | None = None,
        max_redirects: int = MAX_REDIRECTS,
        resolver: Resolver | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        # Settings not given come from the process's policy (set from the backend's config).
        policy = default_policy()
        self.label_studio_url = label_studio_url.rstrip("/") if label_studio_url else None
        self.auth = auth
        self.local_files_root = local_files_root.resolve() if local_files_root is not None else None
        self.max_bytes = policy.max_bytes if max_bytes is None else max_bytes
        self.max_pixels = policy.max_pixels if max_pixels is None else max_pixels
        self.timeout_s = timeout_s
        self.deadline_s = policy.deadline_s if deadline_s is None else deadline_s
        self.max_redirects = max_redirects
        hosts = policy.allowed_hosts if allowed_hosts is None else allowed_hosts
        self.allowed_hosts = tuple(host_entry(entry) for entry in hosts)
        self.allow_private = policy.allow_private if allow_private is None else allow_private
        self.resolver = resolver
        self.clock = clock
        self._ours = origin(self.label_studio_url) if self.label_studio_url else None
        self._pins = Pins()
        if transport is None:
            transport = pinned_transport(self._pins)
        # No proxies from the environment: the connection must go to the address that was checked.
        self.client = httpx.Client(
            timeout=timeout_s, follow_redirects=False, transport=transport, trust_env=False
        )

    def close(self) -> None:
        self.client.close()

    def fetch(self, task: Mapping[str, Any], image_key: str) -> np.ndarray:
        """The task's image as a float32 (H, W) slice, or ImageFetchError naming the task and
        URL."""
        task_id = task.get("id", "?") if isinstance(task, Mapping) else "?"
        url = self.image_url(task, image_key)
        try:
            local = self.local_path(url)
            if local is not None:
                check_pixels(local, self.max_pixels)
                return load_image_file(local)
            content = self._download(url, task_id)
            check_pixels(content, self.max_pixels)
            return decode_slice(content, url)
        except InvalidInputError as error:
            raise ImageFetchError(
                f"task {task_id}: image {redact_url(url)} is not a usable slice: {error}"
            ) from None
        except ImageFetchError as error:
            raise ImageFetchError(f"task {task_id}: image {redact_url(url)}: {error}") from None
        except (ValueError, httpx.InvalidURL) as error:  # e.g. a bad port or IPv6 host
            raise ImageFetchError(
                f"task {task_id}: image {redact_url(url)} is not a valid URL: {error}"
            ) from None

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
        # As Label Studio does, ?d= is always relative to the document root, even with a leading
        # "/".
        candidate = (self.local_files_root / PurePosixPath(relative.lstrip("/"))).resolve()
        if not candidate.is_relative_to(self.local_files_root):
            raise ImageFetchError(
                f"local-files path {relative!r} resolves outside LOCAL_FILES_DOCUMENT_ROOT "
                f"({self.local_files_root}); refused"
            )
        if not candidate.is_file():
            raise ImageFetchError(
                f"local file {candidate} does not exist under LOCAL_FILES_DOCUMENT_ROOT"
            )
        return candidate

    def _download(self, url: str, task_id: Any) -> bytes:
        if url.startswith("data:"):
            return data_url_bytes(url)
        target = httpx.URL(self._resolve(url, task_id)[0])
        deadline = self.clock() + self.deadline_s
        sent_by_label_studio = False
        for _ in range(self.max_redirects + 1):
            ours = self._is_label_studio(target)
            self._check_target(target, sent_by_label_studio)
            headers = dict(self.auth()) if ours and self.auth is not None else {}
            remaining = deadline - self.clock()
            if remaining <= 0:
                raise ImageFetchError(f"not downloaded within {self.deadline_s} s; refused")
            timeout = min(self.timeout_s, remaining)
            try:
                with self.client.stream("GET", target, headers=headers, timeout=timeout) as answer:
                    if answer.is_redirect:
                        target = self._redirect_target(target, answer)
                        sent_by_label_studio = ours
                        continue
                    if answer.status_code != 200:
                        raise ImageFetchError(_status_message(answer.status_code, ours))
                    return self._read(answer, deadline)
            except httpx.TimeoutException:
                raise ImageFetchError(f"no answer within {timeout} s") from None
            except httpx.HTTPError as error:
                raise ImageFetchError(
                    f"cannot be downloaded: {type(error).__name__}: {redact_url(str(error))}"
                ) from None
        raise ImageFetchError(f"more than {self.max_redirects} redirects; refused")

    def _read(self, response: httpx.Response, deadline: float) -> bytes:
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            raise ImageFetchError(f"larger than {self.max_bytes} bytes; refused")
        chunks, size = [], 0
        # Each read waits at most the request's timeout; the deadline is checked between reads.
        for chunk in response.iter_bytes():
            size += len(chunk)
            if size > self.max_bytes:
                raise ImageFetchError(f"larger than {self.max_bytes} bytes; refused")
            if self.clock() > deadline:
                raise ImageFetchError(f"not downloaded within {self.deadline_s} s; refused")
            chunks.append(chunk)
        return b"".join(chunks)

    @staticmethod
    def _redirect_target(current: httpx.URL, response: httpx.Response) -> httpx.URL:
        location = response.headers.get("Location")
        if not location:
            raise ImageFetchError(f"HTTP {response.status_code} redirect without a Location")
        try:
            return current.join(location)
        except httpx.InvalidURL:
            raise ImageFetchError(f"redirect to an invalid URL {redact_url(location)!r}") from None

    def _check_target(self, url: httpx.URL, sent_by_label_studio: bool) -> None:
        """Refuse ``url`` unless it is Label Studio's or an allowed host on allowed addresses."""
        if url.scheme not in ("http", "https"):
            raise ImageFetchError(f"redirect to URL scheme {url.scheme!r} refused")
        host, port = url.host, default_port(url)
        if self._is_label_studio(url):
            if not is_media_path(url.path):
                raise ImageFetchError(
                    f"path {url.path[:80]!r} on Label Studio is not one of its media paths "
                    "(/data/upload/, /storage-data/uploaded/, /data/local-files/, "
                    "/tasks/<id>/presign/); refused"
                )
            self._pins.set(host, port, None)  # the configured server, wherever it runs
            return
        if not sent_by_label_studio and not self._host_allowed(host, port):
            raise ImageFetchError(
                f"host {host!r} is neither Label Studio's nor listed in SUGFW_IMAGE_HOSTS; refused"
            )
        addresses = (self.resolver or resolve_host)(host, port)
        if not addresses:
            raise ImageFetchError(f"host {host!r} resolves to no address; refused")
        for address in addresses:
            reason = refused_address(address, self.allow_private)
            if reason is not None:
                raise ImageFetchError(f"host {host!r} resolves to {address}, {reason}; refused")
        self._pins.set(host, port, addresses[0])

    def _host_allowed(self, host: str, port: int) -> bool:
        return host_listed(host, port, self.allowed_hosts)

    def _resolve(self, url: str, task_id: Any) -> tuple[str, bool]:
        """The absolute URL to GET, and whether it goes to Label Studio (and so carries the key)."""
        parts = urlsplit(url)
        if parts.scheme in ("http", "https"):
            return url, self._is_label_studio(url)
        if parts.scheme in _CLOUD_SCHEMES:
            if isinstance(task_id, bool) or not isinstance(task_id, int) or task_id < 1:
                # It goes into a URL path sent with the key: only a number may.
                raise ImageFetchError(f"task id {str(task_id)[:40]!r} is not a positive integer")
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

    def _is_label_studio(self, url: str | httpx.URL) -> bool:
        """Whether ``url`` is on Label Studio's origin exactly (scheme, host, port, no userinfo)."""
        if self._ours is None:
            return False
        try:
            parsed = url if isinstance(url, httpx.URL) else httpx.URL(url)
        except httpx.InvalidURL:
            return False
        return not parsed.userinfo and origin(parsed) == self._ours


def _status_message(status: int, authenticated: bool) -> str:
    if status in (401, 403) and authenticated:
        return f"Label Studio refused the API key (HTTP {status}); check LABEL_STUDIO_API_KEY"
    if status == 404:
        return "not found (HTTP 404)"
    return f"download failed with HTTP {status}"
