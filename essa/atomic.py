"""The one atomic file write of essa/: a kill leaves the old file or the new one, never half.

It is population's (``population.atomic_file``, which imports nothing from essa), taking text
too. Folder swaps in models/prepare.py and sft/publish.py rename whole folders.
"""

from __future__ import annotations

from pathlib import Path

from population.atomic_file import write_atomic


def atomic_write(path: Path | str, data) -> None:
    """Write ``data`` (str, bytes, or a list of bytes-like parts written one after the other)
    atomically: see :func:`population.atomic_file.write_atomic`."""
    parts = data if isinstance(data, list) else [data]
    write_atomic(path, [p.encode("utf-8") if isinstance(p, str) else p for p in parts])
