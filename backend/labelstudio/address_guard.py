"""The address guard of image downloads (server-side request forgery): which hosts, addresses
and Label Studio paths a download may reach, and a transport that connects only to the address
that was checked.

Before any connection the target host is resolved and every address checked: loopback, private,
link-local, multicast and reserved addresses are refused (private and loopback ones only when
allowed). The checked address is pinned, so a second DNS answer (rebinding) cannot redirect the
connection. With the API key, only Label Studio's media paths are fetched, never its API.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import threading
from collections.abc import Callable, Iterable
from typing import Any

import httpcore
import httpx

from backend.labelstudio.image_policy import ImageFetchError

Resolver = Callable[[str, int], list[str]]
"""(host, port) → its addresses; :func:`resolve_host` by default."""
LABEL_STUDIO_MEDIA_PATHS = re.compile(
    r"^/(?:data/upload/.+|storage-data/uploaded/.+|data/local-files/?|tasks/[0-9]+/presign/?)$"
)
"""Paths on Label Studio's origin fetched with the API key (after percent-decoding)."""


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


def origin(url: str | httpx.URL) -> tuple[str, str, int]:
    parsed = url if isinstance(url, httpx.URL) else httpx.URL(url)
    return parsed.scheme, parsed.host.lower(), default_port(parsed)


def default_port(url: httpx.URL) -> int:
    return url.port or (443 if url.scheme == "https" else 80)


def host_listed(host: str, port: int, entries: Iterable[str | tuple[str, int | None]]) -> bool:
    """Whether ``host``:``port`` matches one of ``entries`` ("host", "host:port", "[v6]:port",
    "*.domain", or such an entry already parsed by ``host_entry``)."""
    host = host.lower()
    for entry in entries:
        pattern, pattern_port = host_entry(entry) if isinstance(entry, str) else entry
        if pattern_port is not None and pattern_port != port:
            continue
        if pattern.startswith("*."):
            if host.endswith(pattern[1:]):
                return True
        elif host == pattern:
            return True
    return False


def host_entry(entry: str) -> tuple[str, int | None]:
    """ "host", "host:port", "[v6]:port" or "*.domain" → (host pattern, port or None)."""
    entry = entry.strip().lower()
    if entry.startswith("["):
        host, _, rest = entry[1:].partition("]")
        return host, int(rest[1:]) if rest[1:].isdigit() else None
    if entry.count(":") == 1 and entry.rsplit(":", 1)[1].isdigit():
        host, port = entry.rsplit(":", 1)
        return host, int(port)
    return entry, None


class Pins:
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


class PinnedBackend(httpcore.NetworkBackend):
    """Connects to the checked address, so a second DNS answer (rebinding) cannot redirect it."""

    def __init__(self, inner: httpcore.NetworkBackend, pins: Pins) -> None:
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


def pinned_transport(pins: Pins) -> httpx.BaseTransport:
    transport = httpx.HTTPTransport()
    pool = getattr(transport, "_pool", None)
    if pool is not None and hasattr(pool, "_network_backend"):
        # TLS still verifies the certificate against the host name: httpcore passes it as SNI.
        pool._network_backend = PinnedBackend(pool._network_backend, pins)
    return transport
