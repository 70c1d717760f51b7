"""Atomic file writes: readers, and a restart after a crash, see the old file or the new, never
half.

Every writer in the project goes through ``atomic_path``: the content is written to a unique
temporary file beside the target (so two writers never share one), flushed to disk, then renamed
over the target in one step, and the folder flushed too (the rename is an entry of the folder: a
power cut before that flush could bring the old file back). On an exception the temporary file is
removed and the target is left as it was. ``atomic_create_json`` writes only when the target does
not exist yet (put-if-absent), in one step as well.
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
    with _temporary(path, path.suffix if suffix is None else suffix) as tmp:
        yield tmp
        with tmp.open("rb+") as written:
            os.fsync(written.fileno())
        os.replace(tmp, path)
    fsync_dir(path.parent)


def fsync_dir(folder: Path) -> None:
    """Flush ``folder``'s entries (renames, links, deletions) to disk; a no-op where folders
    cannot be opened (Windows)."""
    try:
        handle = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass  # some file systems refuse fsync on folders; the rename itself is still atomic
    finally:
        os.close(handle)


def atomic_create_json(path: Path, payload: Any) -> bool:
    """Write ``payload`` as JSON to ``path`` only if ``path`` does not exist; False when it did.

    The content is written beside the target, then hard-linked to its name: the link fails when
    the name exists, so of two concurrent writers exactly one wins and nothing is overwritten.
    """
    path = Path(path)
    with _temporary(path, path.suffix) as tmp:
        tmp.write_text(json.dumps(payload), encoding="utf-8")
        with tmp.open("rb+") as written:
            os.fsync(written.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
    fsync_dir(path.parent)
    return True


@contextmanager
def _temporary(path: Path, end: str) -> Iterator[Path]:
    """A fresh temporary file beside ``path``, always removed on the way out."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.", suffix=f"{TEMP_MARK}{end}"
    )
    os.close(handle)
    tmp = Path(name)
    try:
        yield tmp
    finally:
        tmp.unlink(missing_ok=True)


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
