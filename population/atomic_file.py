"""The one atomic file write of the project (essa.atomic uses it too): a crash leaves the old
file or the whole new one, never half of it."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def write_atomic(path, parts) -> None:
    """Write the bytes-like ``parts`` one after the other (a large buffer needs no joined copy)
    to ``path`` so that a crash leaves the old file or the whole new one: hidden temporary file
    in the same folder, fsync, rename (atomic within one file system), fsync of the folder."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.writelines(parts)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    with contextlib.suppress(OSError):  # some filesystems cannot fsync a folder: harmless
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
