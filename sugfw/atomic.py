"""Atomic file writes: readers, and a restart after a crash, see the old file or the new, never
half.

Every writer in the project goes through ``atomic_path``: the content is written to a unique
temporary file beside the target (so two writers never share one), flushed to disk, then renamed
over the target in one step. On an exception the temporary file is removed and the target is
left as it was.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

TEMP_MARK = ".tmp"
"""Part of every temporary file's name, so folder listings can skip writes in progress."""


@contextmanager
def atomic_path(path: Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path to write; on a clean exit it replaces ``path`` atomically.

    ``suffix`` (default: the target's own) ends the temporary name, for writers such as
    ``numpy.savez`` that add an extension to names without one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    end = path.suffix if suffix is None else suffix
    handle, name = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.", suffix=f"{TEMP_MARK}{end}"
    )
    os.close(handle)
    tmp = Path(name)
    try:
        yield tmp
        with tmp.open("rb+") as written:
            os.fsync(written.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_json(path: Path, payload: Any, indent: int | None = None) -> None:
    """Write ``payload`` as JSON to ``path`` atomically."""
    atomic_write_text(path, json.dumps(payload, indent=indent, sort_keys=indent is not None))


def is_temporary(path: Path) -> bool:
    """Whether ``path`` is a write in progress made by ``atomic_path``."""
    return f"{TEMP_MARK}." in path.name
