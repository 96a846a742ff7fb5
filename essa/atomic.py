"""The one atomic file write of essa/: a kill leaves the old file or the new one, never half.

(population/ keeps its own, since it imports nothing from essa; folder swaps in models/prepare.py
and sft/publish.py rename whole folders.)
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def atomic_write(path: Path | str, data) -> None:
    """Write ``data`` (str, bytes, or a list of bytes-like parts written one after the other,
    so a large buffer needs no joined copy) to a temporary file in the same folder, fsync it,
    then rename it over ``path`` (a rename within one file system is atomic)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            for part in data if isinstance(data, list) else [data]:
                f.write(part.encode("utf-8") if isinstance(part, str) else part)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
