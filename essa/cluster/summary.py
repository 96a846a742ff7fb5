"""One table over a sweep's cells: grid values, validation and test accuracy, generations, time.

Reads what essa-train writes into each cell's run directory (``summary.json``, ``metrics.jsonl``,
``checkpoint/state.json``); a cell without a run directory or without a summary is shown as
``missing`` or ``running`` (or interrupted) with whatever its metrics hold so far.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from essa.cluster.sweep import Cell, Sweep, load_cell_config
from essa.rundir import read_metrics

STATUS_DONE, STATUS_PARTIAL, STATUS_STARTED, STATUS_MISSING = "done", "partial", "started", "missing"
METRIC_COLUMNS = ("status", "val_start", "val_last", "val_best", "test_mean", "generations",
                  "wall_time_s")


def cell_row(sweep: Sweep, cell: Cell, runs_root: Path | None = None) -> dict:
    """The table row of one cell (values are None where the run has nothing to say)."""
    run_dir = cell_run_dir(sweep, cell, runs_root)
    row: dict = {"cell": cell.index, **{sweep.short(k): v for k, v in cell.values.items()},
                 "run_dir": str(run_dir)}
    row.update(run_metrics(run_dir))
    return row


def cell_run_dir(sweep: Sweep, cell: Cell, runs_root: Path | None = None) -> Path:
    """Where the cell's run lives: ``<output_dir>/<run name>`` (output_dir from the cell's config
    unless ``runs_root`` is given)."""
    if runs_root is not None:
        return Path(runs_root) / cell.run_name
    return Path(load_cell_config(sweep, cell).output_dir) / cell.run_name


def run_metrics(run_dir: Path) -> dict:
    """status, validation accuracy at the start / last / best, test accuracy of the mean,
    generations and search wall time of one run directory."""
    row = dict.fromkeys(METRIC_COLUMNS)
    if not run_dir.is_dir():
        row["status"] = STATUS_MISSING
        return row
    records = read_metrics(run_dir / "metrics.jsonl")
    val = [r for r in records if r.get("phase") == "validation" and r.get("val_accuracy") is not None]
    searched = [r for r in val if r.get("generation", 0) >= 0]  # generation -1 is the start
    start = [r for r in val if r.get("generation", 0) < 0]
    row["val_start"] = start[0]["val_accuracy"] if start else None
    row["val_last"] = searched[-1]["val_accuracy"] if searched else None
    row["val_best"] = max(r["val_accuracy"] for r in searched) if searched else None
    search = [r for r in records if r.get("phase") == "search"]
    row["generations"] = (search[-1]["generation"] + 1) if search else 0
    row["wall_time_s"] = search[-1].get("wall_time") if search else None
    test = [r for r in records if r.get("phase") == "test"]
    row["test_mean"] = test[-1].get("test_accuracy_mean") if test else None
    summary_path = run_dir / "summary.json"
    if summary_path.is_file():
        summary = json.loads(summary_path.read_text())
        row["status"] = STATUS_DONE
        row["generations"] = summary.get("generations", row["generations"])
        row["wall_time_s"] = summary.get("wall_time", row["wall_time_s"])
        mean = (summary.get("test") or {}).get("accuracy", {}).get("mean")
        row["test_mean"] = mean if mean is not None else row["test_mean"]
    else:
        row["status"] = STATUS_PARTIAL if search else STATUS_STARTED
    return row


def sweep_rows(sweep: Sweep, runs_root: Path | None = None) -> list[dict]:
    """One row per cell, in cell order."""
    return [cell_row(sweep, cell, runs_root) for cell in sweep.cells()]


def columns(sweep: Sweep) -> list[str]:
    """Table columns: cell, the grid keys (short names), the metrics, the run directory."""
    return ["cell", *(sweep.short(k) for k in sweep.grid), *METRIC_COLUMNS, "run_dir"]


def to_markdown(sweep: Sweep, rows: list[dict]) -> str:
    """A markdown table; missing values print as '-'."""
    cols = columns(sweep)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in rows:
        lines.append("| " + " | ".join(_fmt(row.get(c), c in METRIC_COLUMNS) for c in cols) + " |")
    done = sum(r["status"] == STATUS_DONE for r in rows)
    lines.append("")
    lines.append(f"{done} of {len(rows)} cells done ({sweep.name}, {sweep.path})")
    return "\n".join(lines) + "\n"


def to_csv(sweep: Sweep, rows: list[dict]) -> str:
    """The same table as CSV (empty fields where a value is missing)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns(sweep), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    return buffer.getvalue()


def _fmt(value, metric: bool) -> str:
    """Metrics: accuracies with 4 decimals, seconds with 1; grid values as written."""
    if value is None:
        return "-"
    if metric and isinstance(value, float):
        return f"{value:.4f}" if abs(value) <= 1 else f"{value:.1f}"
    return str(value)
