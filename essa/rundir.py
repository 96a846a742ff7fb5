"""The run directory: resolved config, human-readable log, ``metrics.jsonl``.

Every run writes ``config.yaml`` (the resolved config, readable back with ``--config``),
``run.log`` (what the console showed, with timestamps) and ``metrics.jsonl`` (one JSON object a
line, flushed and fsynced so a kill never loses a written line).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path

from essa.atomic import atomic_write
from essa.config import to_yaml

LOGGER_NAME = "essa"


def create_run_dir(config, exist_ok: bool = True) -> Path:
    """``<output_dir>/<name>`` with the resolved config written into it (atomically)."""
    run_dir = Path(config.output_dir) / config.name
    if run_dir.exists() and not exist_ok:
        raise FileExistsError(f"run directory exists: {run_dir} (choose another name or --resume)")
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(run_dir / "config.yaml", to_yaml(config))
    return run_dir


def setup_logging(run_dir: Path | None = None, level: int = logging.INFO) -> logging.Logger:
    """Console (plain, to stderr) plus ``run.log`` in the run directory."""
    logger = logging.getLogger(LOGGER_NAME)
    logger.setLevel(level)
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(logging.Formatter("[essa %(asctime)s] %(message)s", "%H:%M:%S"))
    logger.addHandler(console)
    if run_dir is not None:
        file_handler = logging.FileHandler(Path(run_dir) / "run.log", encoding="utf-8")
        file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logger.addHandler(file_handler)
    return logger


class MetricsWriter:
    """Appends one JSON object per line to ``metrics.jsonl``, durably."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def write(self, record: dict) -> None:
        record = {"time": round(time.time(), 3), **record}
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, sort_keys=False) + "\n")
            f.flush()
            os.fsync(f.fileno())


def read_metrics(path: Path) -> list[dict]:
    """All records of a ``metrics.jsonl`` (a torn last line from a kill is ignored)."""
    records = []
    if not Path(path).is_file():
        return records
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return records
