"""Strip secrets from payloads and URLs before anything reaches a log or an error message.

Label Studio sends credentials inside ordinary payloads (the project object of a webhook carries
``token``; ``/setup`` carries ``access_token``), so request bodies are only ever logged through
:func:`redact`.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

REDACTED = "***"

# Matched as substrings of the lower-cased key, so "webhook_secret", "refresh_token" and
# "X-API-Key" are caught too; over-redacting a harmless field only costs a log detail.
_SECRET_KEY_PARTS = (
    "token",
    "api_key",
    "apikey",
    "api-key",
    "password",
    "passwd",
    "secret",
    "authorization",
    "cookie",
    "credential",
    "session",
)


def is_secret_key(key: object) -> bool:
    """Whether a mapping key names something that must never be logged."""
    if not isinstance(key, str):
        return False
    lowered = key.lower()
    return any(part in lowered for part in _SECRET_KEY_PARTS)


def redact(value: Any) -> Any:
    """A copy of ``value`` with every secret-named key's value replaced, at any depth."""
    if isinstance(value, dict):
        return {key: REDACTED if is_secret_key(key) else redact(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(item) for item in value]
    return value


def redact_url(url: str) -> str:
    """``url`` without user:password and with secret-named query parameters masked."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{REDACTED}@{netloc.rsplit('@', 1)[1]}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(key, REDACTED if is_secret_key(key) else item) for key, item in pairs], safe="/")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
