"""``essa compare``: validation accuracy against training time and generated tokens, across runs.

    essa compare runs/demo-cpu runs/demo-grpo [--output DIR] [--target 0.4]

Reads each run directory (``config.yaml``, the ``phase: validation`` records of ``metrics.jsonl``,
``summary.json`` when the run finished), from essa-train or essa-grpo alike (``summary["method"]``,
essa when absent), and writes into ``--output`` (default: the current folder):

- ``compare.md``: one table, also printed: start, best and final validation accuracy, test accuracy,
  training wall time and generated tokens, the time and tokens each run needed to first reach the
  target accuracy, and the speed ratio = time-to-target of the run / that of the first run (so with
  ESSA first, a GRPO ratio of 2.0 means ESSA got there twice as fast);
- ``compare.png``: validation accuracy vs wall time and vs generated tokens, the target dashed.

The target defaults to the lowest of the runs' best validation accuracies (the highest accuracy every
run reached). Both methods report ``wall_time`` as training seconds with evaluation excluded and
``tokens_total`` as tokens generated for training so far.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from essa.rundir import read_metrics

NOT_REACHED = "not reached"
# essa-grpo's final adapter; essa-train's returned adapter (the best-validated mean, else the last)
TEST_FINAL_KEYS = ("final", "selected", "mean")


class CompareError(ValueError):
    """A run directory that cannot be compared; the message names its path."""


@dataclass
class Curve:
    """One run's validation curve (sorted by wall time) and what its files say about it."""

    path: Path
    name: str
    method: str
    wall_time: list[float]
    tokens: list[int]
    accuracy: list[float]
    summary: dict = field(default_factory=dict)

    @property
    def start(self) -> float:
        return self.accuracy[0]

    @property
    def best(self) -> float:
        return max(self.accuracy)

    @property
    def final(self) -> float:
        return self.accuracy[-1]

    @property
    def total_wall_time(self) -> float:
        return float(self.summary.get("wall_time", self.wall_time[-1]))

    @property
    def total_tokens(self) -> int:
        return int(self.summary.get("tokens", self.tokens[-1]))

    def test_accuracy(self) -> tuple[float, int] | None:
        """(final test accuracy, items) from summary.json, None when there is none."""
        test = self.summary.get("test") or {}
        acc = test.get("accuracy") or {}
        for key in TEST_FINAL_KEYS:
            if acc.get(key) is not None:
                return float(acc[key]), int(test.get("items", 0))
        return None

    def reach(self, target: float) -> tuple[float, int] | None:
        """(wall time, tokens) of the first validation record at or above ``target``; None if none."""
        for wall, tokens, acc in zip(self.wall_time, self.tokens, self.accuracy):
            if acc >= target - 1e-12:
                return wall, tokens
        return None


def load_curve(run_dir: str | Path) -> Curve:
    """The validation curve of a run directory; a folder that is not a run is a CompareError."""

    path = Path(run_dir)
    metrics_path = path / "metrics.jsonl"
    if not path.is_dir():
        raise CompareError(f"{path}: no such run directory")
    if not metrics_path.is_file():
        raise CompareError(f"{path}: no metrics.jsonl there (not an essa-train or essa-grpo run "
                           f"directory?)")
    config = _read_yaml(path / "config.yaml")
    summary = _read_json(path / "summary.json")
    records = [r for r in read_metrics(metrics_path)
               if r.get("phase") == "validation" and _finite(r.get("val_accuracy"))]
    if not records:
        raise CompareError(f"{metrics_path}: no validation records with an accuracy (was the run "
                           f"validated? runtime.eval_every / grpo.eval_every)")
    records.sort(key=lambda r: (float(r.get("wall_time", 0.0)), r.get("generation", 0)))
    return Curve(path=path, name=str(config.get("name") or path.name),
                 method=str(summary.get("method", "essa")),
                 wall_time=[float(r.get("wall_time", 0.0)) for r in records],
                 tokens=[int(r.get("tokens_total", 0)) for r in records],
                 accuracy=[float(r["val_accuracy"]) for r in records], summary=summary)


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        return {}
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else {}


def _read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise CompareError(f"{path}: not valid JSON ({e})") from None
    return data if isinstance(data, dict) else {}


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# ---- the comparison ------------------------------------------------------------------------------


@dataclass
class Row:
    """One line of the table: a run and its time and tokens to the target."""

    curve: Curve
    time_to_target: float | None
    tokens_to_target: int | None
    speed_ratio: float | None  # time_to_target / that of the first run


def default_target(curves: list[Curve]) -> float:
    """The lowest of the runs' best validation accuracies: a level every run reached."""
    return min(c.best for c in curves)


def compare(curves: list[Curve], target: float | None = None) -> tuple[float, list[Row]]:
    """(target, one row per curve in the given order)."""
    if not curves:
        raise CompareError("no runs to compare")
    target = default_target(curves) if target is None else float(target)
    reached = [c.reach(target) for c in curves]
    first = reached[0][0] if reached[0] is not None else None
    rows = []
    for curve, hit in zip(curves, reached):
        ratio = None
        if hit is not None and first is not None and first > 0:
            ratio = hit[0] / first
        rows.append(Row(curve, hit[0] if hit else None, hit[1] if hit else None, ratio))
    return target, rows


# ---- outputs -------------------------------------------------------------------------------------


COLUMNS = ("run", "method", "start val", "best val", "final val", "test", "wall time", "tokens",
           "time to target", "tokens to target", "speed ratio")


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _seconds(value: float | None) -> str:
    return NOT_REACHED if value is None else f"{value:.1f} s"


def table_lines(target: float, rows: list[Row]) -> list[str]:
    """The markdown table (header, rule, one line per run)."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        c = row.curve
        test = c.test_accuracy()
        cells = [c.name, c.method, _pct(c.start), _pct(c.best), _pct(c.final),
                 "-" if test is None else f"{_pct(test[0])} ({test[1]} items)",
                 f"{c.total_wall_time:.1f} s", f"{c.total_tokens:,}",
                 _seconds(row.time_to_target),
                 NOT_REACHED if row.tokens_to_target is None else f"{row.tokens_to_target:,}",
                 "-" if row.speed_ratio is None else f"{row.speed_ratio:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def markdown(target: float, rows: list[Row], target_given: bool) -> str:
    """compare.md: what was compared, the table, and how to read it."""
    how = "given with --target" if target_given else "the lowest of the runs' best validation accuracies"
    first = rows[0].curve.name
    lines = ["# Run comparison", "",
             f"Target validation accuracy: {_pct(target)} ({how}).", "",
             *table_lines(target, rows), "",
             "Wall time: training seconds with evaluation excluded; tokens: tokens generated for "
             "training. Time and tokens to target: at the first validation at or above the target. "
             f"Speed ratio: time to target over that of the first run ({first}). Test: the final "
             "adapter (essa-grpo) or mean vector (essa-train) on the test split.",
             "",
             "Runs: " + ", ".join(f"`{r.curve.path}`" for r in rows), ""]
    return "\n".join(lines)


def plot(target: float, rows: list[Row], path: Path) -> Path:
    """compare.png: accuracy vs wall time (left) and vs generated tokens (right)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for row in rows:
        c = row.curve
        label = f"{c.name} ({c.method})"
        acc = [100 * a for a in c.accuracy]
        left.plot(c.wall_time, acc, marker="o", label=label)
        right.plot(c.tokens, acc, marker="o", label=label)
    for ax, xlabel in ((left, "training wall time (s, evaluation excluded)"),
                       (right, "generated tokens")):
        ax.axhline(100 * target, color="grey", linestyle="--", linewidth=1, label="target")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("validation accuracy (%)")
        ax.grid(alpha=0.3)
    left.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_comparison(run_dirs: list[str | Path], output: str | Path = ".",
                     target: float | None = None) -> tuple[str, Path, Path]:
    """Load, compare, write compare.md and compare.png into ``output``; (markdown, md path, png path)."""
    curves = [load_curve(d) for d in run_dirs]
    target_value, rows = compare(curves, target)
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    text = markdown(target_value, rows, target is not None)
    md_path = out / "compare.md"
    md_path.write_text(text, encoding="utf-8")
    png_path = plot(target_value, rows, out / "compare.png")
    return text, md_path, png_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="essa compare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                        help="run directories; the first is the reference of the speed ratio")
    parser.add_argument("--output", "-o", default=".", metavar="DIR",
                        help="folder for compare.md and compare.png (default: the current folder)")
    parser.add_argument("--target", type=float, metavar="ACC",
                        help="target validation accuracy in [0, 1] (default: the lowest of the runs' "
                        "best validation accuracies)")
    args = parser.parse_args(argv)
    if args.target is not None and not 0 <= args.target <= 1:
        print(f"essa compare: --target must be in [0, 1] (an accuracy, not a percentage), got "
              f"{args.target}", file=sys.stderr)
        return 2
    try:
        text, md_path, png_path = write_comparison(args.run_dirs, args.output, args.target)
    except CompareError as e:
        print(f"essa compare: {e}", file=sys.stderr)
        return 2
    print(text)
    print(f"wrote {md_path} and {png_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
