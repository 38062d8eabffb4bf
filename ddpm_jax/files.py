"""Atomic file writes: a temporary file in the same directory, fsynced, then renamed over the target, so a
crash or kill leaves either the old file or the new one, never half of one. And the check that a directory can
be written, before work whose results would go there."""

from __future__ import annotations

import contextlib
import os
import tempfile


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w"):
    """`with atomic_write(path, "wb") as f: ...` writes `path` atomically (parent directories are created)."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=os.path.splitext(path)[1])
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write a text file atomically."""
    with atomic_write(path) as f:
        f.write(text)


def check_writable(path: str | os.PathLike, purpose: str) -> None:
    """Raise ValueError unless `path` (or, while it does not exist, its nearest existing parent) is a writable
    directory; `purpose` says what will be written there."""
    existing = os.path.abspath(path)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{os.fspath(path)!r} is not writable ({existing!r} is on a read-only filesystem or lacks "
                         f"write permission): {purpose}. Make it writable, or choose another directory.")
