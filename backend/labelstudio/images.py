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
are fetched (``LABEL_STUDIO_MEDIA_PATHS``: uploads, local files and a task's presign endpoint, the
task id an integer), never its API (``/api/projects/1/next`` would lock a task for the admin).
Only PNG, JPEG and TIFF are decoded (the formats a slice is stored in), each at most
``max_pixels`` and with sides at most ``MAX_ASPECT_RATIO`` apart (an 8 × 5000 strip leaves no
pixel of its short side on the model's canvas).
"""

from __future__ import annotations

import base64
import binascii
import io
import ipaddress
import re
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import parse_qs, unquote_to_bytes, urlsplit

import httpcore
import httpx
import numpy as np
from PIL import Image

from backend.redact import install_url_redaction, redact_url
from sugfw.data import load_image_file
from sugfw.errors import InvalidInputError, SugfwError

AuthHeaders = Callable[[], Mapping[str, str]]
Resolver = Callable[[str, int], list[str]]
"""(host, port) → its addresses; :func:`resolve_host` by default."""
MAX_IMAGE_BYTES = 64 * 1024 * 1024
MAX_IMAGE_PIXELS = 16_777_216
"""4096 × 4096: a decoded slice is float32, so about 64 MB each (the scorer runs 8 threads)."""
MAX_REDIRECTS = 5
MAX_ASPECT_RATIO = 32
"""Longest side / shortest side of a slice: a 256-pixel canvas keeps 8 pixels of the short side."""
SLICE_FORMATS = ("PNG", "JPEG", "TIFF")
"""What Pillow may decode here: its other decoders are attack surface no slice needs."""
LABEL_STUDIO_MEDIA_PATHS = re.compile(
    r"^/(?:data/upload/.+|storage-data/uploaded/.+|data/local-files/?|tasks/[0-9]+/presign/?)$"
)
"""Paths on Label Studio's origin fetched with the API key (after percent-decoding)."""
_CLOUD_SCHEMES = ("s3", "gs", "azure-blob")


install_url_redaction()  # httpx logs request URLs, presigned signatures included


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


@dataclass(frozen=True)
class ImagePolicy:
    """Where images may come from and how large and slow they may be (see ``ImageFetcher``)."""

    allowed_hosts: tuple[str, ...] = ()
    allow_private: bool = False
    max_bytes: int = MAX_IMAGE_BYTES
    max_pixels: int = MAX_IMAGE_PIXELS
    deadline_s: float = 60.0

    @classmethod
    def from_config(cls, config: Any) -> ImagePolicy:
        """From a ``BackendConfig`` (SUGFW_IMAGE_* settings)."""
        return cls(
            tuple(config.image_hosts),
            config.image_allow_private,
            config.image_max_bytes,
            config.image_max_pixels,
            config.image_deadline_s,
        )


_default_policy = ImagePolicy()


def set_default_policy(policy: ImagePolicy) -> None:
    """The policy of every fetcher built without explicit limits (the jobs' fetchers included)."""
    global _default_policy
    _default_policy = policy


def default_policy() -> ImagePolicy:
    return _default_policy


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
        policy = _default_policy
        self.label_studio_url = label_studio_url.rstrip("/") if label_studio_url else None
        self.auth = auth
        self.local_files_root = local_files_root.resolve() if local_files_root is not None else None
        self.max_bytes = policy.max_bytes if max_bytes is None else max_bytes
        self.max_pixels = policy.max_pixels if max_pixels is None else max_pixels
        self.timeout_s = timeout_s
        self.deadline_s = policy.deadline_s if deadline_s is None else deadline_s
        self.max_redirects = max_redirects
        hosts = policy.allowed_hosts if allowed_hosts is None else allowed_hosts
        self.allowed_hosts = tuple(_host_entry(entry) for entry in hosts)
        self.allow_private = policy.allow_private if allow_private is None else allow_private
        self.resolver = resolver
        self.clock = clock
        self._ours = _origin(self.label_studio_url) if self.label_studio_url else None
        self._pins = _Pins()
        if transport is None:
            transport = _pinned_transport(self._pins)
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
                _check_pixels(local, self.max_pixels)
                return load_image_file(local)
            content = self._download(url, task_id)
            _check_pixels(content, self.max_pixels)
            return _decode(content, url)
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
            return _data_url_bytes(url)
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
        host, port = url.host, _port(url)
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
        return not parsed.userinfo and _origin(parsed) == self._ours


def is_media_path(path: str) -> bool:
    """Whether ``path`` (percent-decoded) is one of Label Studio's media paths, without dot
    segments (Label Studio's router does not resolve them, so neither does this check)."""
    if "\\" in path or any(part in (".", "..") for part in path.split("/")):
        return False
    return LABEL_STUDIO_MEDIA_PATHS.match(path) is not None


def resolve_host(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to, in resolver order (a literal address is itself)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as error:
        raise ImageFetchError(f"host {host!r} cannot be resolved: {error}") from None
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def refused_address(address: str, allow_private: bool = False) -> str | None:
    """Why a connection to ``address`` is refused, or None when it is allowed."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 scope id
    except ValueError:
        return "not an IP address"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    if ip.is_loopback:  # before "reserved": ::1 lies in IPv6's reserved ::/8
        return None if allow_private else "a loopback address"
    # Never allowed: cloud metadata services live on link-local addresses.
    for kind in ("link_local", "multicast", "unspecified", "reserved"):
        if getattr(ip, f"is_{kind}"):
            return f"a {kind.replace('_', '-')} address"
    if ip.is_private or not ip.is_global:
        return None if allow_private else "a private address"
    return None


def _origin(url: str | httpx.URL) -> tuple[str, str, int]:
    parsed = url if isinstance(url, httpx.URL) else httpx.URL(url)
    return parsed.scheme, parsed.host.lower(), _port(parsed)


def _port(url: httpx.URL) -> int:
    return url.port or (443 if url.scheme == "https" else 80)


def host_listed(host: str, port: int, entries: Iterable[str | tuple[str, int | None]]) -> bool:
    """Whether ``host``:``port`` matches one of ``entries`` ("host", "host:port", "[v6]:port",
    "*.domain", or such an entry already parsed by ``_host_entry``)."""
    host = host.lower()
    for entry in entries:
        pattern, pattern_port = _host_entry(entry) if isinstance(entry, str) else entry
        if pattern_port is not None and pattern_port != port:
            continue
        if pattern.startswith("*."):
            if host.endswith(pattern[1:]):
                return True
        elif host == pattern:
            return True
    return False


def _host_entry(entry: str) -> tuple[str, int | None]:
    """ "host", "host:port", "[v6]:port" or "*.domain" → (host pattern, port or None)."""
    entry = entry.strip().lower()
    if entry.startswith("["):
        host, _, rest = entry[1:].partition("]")
        return host, int(rest[1:]) if rest[1:].isdigit() else None
    if entry.count(":") == 1 and entry.rsplit(":", 1)[1].isdigit():
        host, port = entry.rsplit(":", 1)
        return host, int(port)
    return entry, None


class _Pins:
    """host:port → the address that was checked (None: Label Studio, connect as named)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pins: dict[tuple[str, int], str | None] = {}

    def set(self, host: str, port: int, address: str | None) -> None:
        with self._lock:
            self._pins[(host.lower(), port)] = address

    def get(self, host: str, port: int) -> tuple[bool, str | None]:
        with self._lock:
            key = (host.lower(), port)
            return key in self._pins, self._pins.get(key)


class _PinnedBackend(httpcore.NetworkBackend):
    """Connects to the checked address, so a second DNS answer (rebinding) cannot redirect it."""

    def __init__(self, inner: httpcore.NetworkBackend, pins: _Pins) -> None:
        self.inner = inner
        self.pins = pins

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> Any:
        known, address = self.pins.get(host, port)
        if not known:
            raise httpcore.ConnectError(f"connection to unchecked host {host!r} refused")
        return self.inner.connect_tcp(
            address or host,
            port,
            timeout=timeout,
            local_address=local_address,
            socket_options=socket_options,
        )

    def connect_unix_socket(self, *args: Any, **kwargs: Any) -> Any:
        raise httpcore.ConnectError("unix sockets are not used for images")

    def sleep(self, seconds: float) -> None:
        self.inner.sleep(seconds)


def _pinned_transport(pins: _Pins) -> httpx.BaseTransport:
    transport = httpx.HTTPTransport()
    pool = getattr(transport, "_pool", None)
    if pool is not None and hasattr(pool, "_network_backend"):
        # TLS still verifies the certificate against the host name: httpcore passes it as SNI.
        pool._network_backend = _PinnedBackend(pool._network_backend, pins)
    return transport


def _check_pixels(source: bytes | Path, max_pixels: int) -> None:
    """Refuse an image over ``max_pixels`` from its header, before it is decoded."""
    handle = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        with Image.open(handle, formats=SLICE_FORMATS) as image:
            width, height = image.size
    except Image.DecompressionBombError as error:
        raise ImageFetchError(f"too many pixels: {error}; refused") from None
    except Exception:  # Pillow raises many kinds for what it cannot identify
        raise InvalidInputError(f"not a {', '.join(SLICE_FORMATS)} image Pillow can read") from None
    if width * height > max_pixels:
        raise ImageFetchError(f"{width} x {height} pixels, more than {max_pixels}; refused")
    if max(width, height) > MAX_ASPECT_RATIO * max(min(width, height), 1):
        raise ImageFetchError(
            f"{width} x {height} pixels: sides more than {MAX_ASPECT_RATIO} times apart; refused"
        )


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
    suffix = (
        PurePosixPath(urlsplit(url).path).suffix[:10] if not url.startswith("data:") else ".img"
    )
    with tempfile.NamedTemporaryFile(suffix=suffix or ".img") as handle:
        handle.write(content)
        handle.flush()
        try:
            return load_image_file(handle.name)
        except InvalidInputError as error:
            # The temp path means nothing to the user: drop it from the message.
            raise InvalidInputError(str(error).replace(handle.name, "downloaded file")) from None
