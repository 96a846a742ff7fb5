"""The one atomic file write of essa/: a kill leaves the old file or the new one, never half.

(population/ keeps its own, since it imports nothing from essa.)
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def atomic_write(path: Path | str, data: str | bytes) -> None:
    """Write ``data`` to a temporary file in the same folder, fsync it, then rename it over
    ``path`` (a rename within one file system is atomic)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
