"""Put a finished folder in place atomically, and the summary file every SFT folder carries."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

SUMMARY_FILE = "sft_summary.json"


def write_summary(folder: Path, summary: dict) -> None:
    """``sft_summary.json`` in ``folder`` (written before the folder is published)."""
    with open(Path(folder) / SUMMARY_FILE, "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2)
        f.flush()
        os.fsync(f.fileno())


def read_summary(folder: str | Path) -> dict:
    """The ``sft_summary.json`` of a published SFT folder."""
    return json.loads((Path(folder) / SUMMARY_FILE).read_text())


def publish_folder(tmp: Path, dest: Path, overwrite: bool = True) -> bool:
    """Rename the complete folder ``tmp`` to ``dest``; return False if ``dest`` was kept instead.

    A directory cannot be renamed over a non-empty one, so an old ``dest`` is first moved aside
    (and deleted after): readers see the old folder or the new one, never a half-written one.
    With ``overwrite=False`` an existing ``dest`` wins (another process finished first) and
    ``tmp`` is deleted.
    """
    tmp, dest = Path(tmp), Path(dest)
    if dest.exists() and not overwrite:
        shutil.rmtree(tmp, ignore_errors=True)
        return False
    old = None
    if dest.exists():
        old = dest.parent / f".{dest.name}.old-{time.time_ns()}"
        os.replace(dest, old)
    os.replace(tmp, dest)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return True
