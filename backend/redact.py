"""Strip secrets from payloads and URLs before anything reaches a log or an error message.

Label Studio sends credentials inside ordinary payloads (the project object of a webhook carries
``token``; ``/setup`` carries ``access_token``), so request bodies are only ever logged through
:func:`redact`.
"""

from __future__ import annotations

import logging
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
    "signature",  # X-Amz-Signature, X-Goog-Signature
)
# Matched whole: too short to match as substrings without masking ordinary words.
_SECRET_KEYS = {"sig", "key", "code", "googleaccessid", "x-amz-credential", "x-goog-credential"}


def is_secret_key(key: object) -> bool:
    """Whether a mapping key names something that must never be logged."""
    if not isinstance(key, str):
        return False
    lowered = key.lower()
    return lowered in _SECRET_KEYS or any(part in lowered for part in _SECRET_KEY_PARTS)


def redact(value: Any) -> Any:
    """A copy of ``value`` with every secret-named key's value replaced, at any depth, and every
    URL-like string passed through :func:`redact_url` (task data holds signed image URLs)."""
    if isinstance(value, dict):
        return {
            key: REDACTED if is_secret_key(key) else redact(item) for key, item in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [redact(item) for item in value]
    if isinstance(value, str) and _looks_like_url(value):
        return redact_url(value)
    return value


def _looks_like_url(text: str) -> bool:
    return ("?" in text or "@" in text) and ("://" in text or text.startswith("/"))


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
        masked = [(key, REDACTED if is_secret_key(key) else item) for key, item in pairs]
        query = urlencode(masked, safe="/*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


class UrlRedactingFilter(logging.Filter):
    """Masks URL arguments of log records: httpx logs every request's full URL at INFO, and a
    presigned image URL carries its signature in the query."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(_redact_arg(arg) for arg in record.args)
        elif isinstance(record.msg, str) and _looks_like_url(record.msg) and not record.args:
            record.msg = redact_url(record.msg)
        return True


def _redact_arg(arg: Any) -> Any:
    text = str(arg) if type(arg).__name__ == "URL" else arg
    return redact_url(text) if isinstance(text, str) and _looks_like_url(text) else arg


_FILTER = UrlRedactingFilter()


def install_url_redaction(logger_names: tuple[str, ...] = ("httpx", "httpcore")) -> None:
    """Attach :class:`UrlRedactingFilter` to the loggers of the HTTP client (idempotent)."""
    for name in logger_names:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
