"""One run's report: ``report.md`` (the accuracy table and run figures) and ``fitness.png``.

Everything is read back from the run directory (config.yaml, metrics.jsonl, summary.json), so
``essa report RUN_DIR`` can redraw it at any time, also for an interrupted run (then without the
final table).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import yaml

from essa.atomic import atomic_write
from essa.rundir import read_metrics

START_LABELS = {"sft": "SFT warm start", "fresh": "fresh adapter (no warm start)"}


def _pct(value) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{100 * value:.1f}%"


def _score(value) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.4f}"


def _duration(seconds) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


def load_run(run_dir: str | Path) -> tuple[dict, list[dict], dict]:
    """(config dict, metrics records, summary dict or {}) of a run directory."""
    run_dir = Path(run_dir)
    metrics_path = run_dir / "metrics.jsonl"
    if not metrics_path.is_file():
        raise FileNotFoundError(f"{run_dir}: no metrics.jsonl there (not an essa run directory?)")
    config = yaml.safe_load((run_dir / "config.yaml").read_text()) if (run_dir / "config.yaml").is_file() else {}
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    return config or {}, read_metrics(metrics_path), summary


def plot_fitness(records: list[dict], path: Path, title: str) -> Path:
    """fitness (max, mean) and validation accuracy of the mean against generation and wall time."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    search = [r for r in records if r.get("phase") == "search"]
    val = [r for r in records if r.get("phase") == "validation" and r.get("val_accuracy") is not None]
    fig, axes = plt.subplots(2, 2, figsize=(10, 7), sharey="row")
    for col, (xkey, xlabel) in enumerate((("generation", "generation"),
                                          ("wall_time", "search wall time (s)"))):
        ax = axes[0][col]
        for key, style in (("fitness_max", "-o"), ("fitness_mean", "-s")):
            pts = [(r[xkey], r[key]) for r in search if r.get(key) is not None]
            if pts:
                ax.plot(*zip(*pts), style, ms=3, label=key.replace("_", " "))
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
        ax = axes[1][col]
        # generation -1 is the starting adapter: drawn at generation 0, before any search
        pts = [(max(r["generation"] + 1, 0) if xkey == "generation" else r[xkey],
                100 * r["val_accuracy"]) for r in val if xkey == "generation" or xkey in r]
        if pts:
            ax.plot(*zip(*pts), "-o", color="tab:green", ms=4, label="validation accuracy (mean)")
        ax.set_xlabel(xlabel if xkey == "wall_time" else "generations done")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("fitness")
    axes[1][0].set_ylabel("validation accuracy (%)")
    axes[0][0].legend(fontsize=8)
    axes[1][0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def render_report(config: dict, records: list[dict], summary: dict) -> str:
    """The text of report.md."""
    name = config.get("name", "essa")
    adapter_init = (config.get("adapter") or {}).get("init", "sft")
    start = START_LABELS.get(adapter_init, f"starting adapter ({adapter_init})")
    fitness = (config.get("fitness") or {}).get("kind", summary.get("fitness_kind", "accuracy"))
    search = [r for r in records if r.get("phase") == "search"]
    val = [r for r in records if r.get("phase") == "validation" and r.get("val_accuracy") is not None]
    lines = [f"# ESSA run `{name}`", ""]
    model = (config.get("model") or {}).get("path", "?")
    task = (config.get("task") or {}).get("dataset", "?")
    note = "" if fitness == "accuracy" else \
        " (a dense option, not the paper's accuracy fitness; accuracy below is greedy and strict)"
    pct, unit, metric = _pct, "points", "accuracy"
    if fitness == "reward_model":  # validation and test report the reward model's mean score
        note = " (validation and test below are the reward model's mean score, no baseline)"
        pct, unit, metric = _score, "", "reward-model score"
    lines += [f"Model `{model}`, task `{task}`, fitness `{fitness}`{note}, seed {config.get('seed', '?')}.", ""]

    final_val, test = summary.get("validation") or {}, summary.get("test") or {}
    if final_val or test:
        va, ta = final_val.get("accuracy", {}), test.get("accuracy", {})
        head = [f"{split} ({part['items']} items)" if part.get("items") else split
                for split, part in (("validation", final_val), ("test", test))]
        lines += [f"| model | {head[0]} | {head[1]} |", "|---|---|---|"]
        selected = summary.get("selected")
        rows = [("base", "base model"), ("start", start), ("mean", "ESSA, last mean")]
        if selected:
            rows.append(("selected", f"ESSA, selected: mean of generation {selected['generation']}"))
        for key, label in rows:
            lines.append(f"| {label} | {pct(va.get(key))} | {pct(ta.get(key))} |")
        returned = "selected" if selected and "selected" in ta else "mean"
        if "start" in ta and returned in ta:
            gain = ta[returned] - ta["start"]
            gain_text = f"{100 * gain:+.1f} points" if unit else f"{gain:+.4f}"
            what = (f"adapter_selected, the mean of generation {selected['generation']} (best "
                    f"validation score during the search)" if returned == "selected" else
                    "adapter_mean, the last mean")
            lines += ["", f"The run returns {what}. ESSA minus {start} on test: {gain_text}."]
        if final_val.get("from_validations"):
            lines += ["", f"Validation scores of {', '.join(final_val['from_validations'])} are the ones "
                      "measured during the search on the same items (not scored again)."]
        if summary.get("stopped_early"):
            lines += ["", "The search stopped early: validation had not improved for "
                      f"runtime.patience = {(config.get('runtime') or {}).get('patience')} validations."]
        lines.append("")
    else:
        lines += ["No final evaluation yet (the run is unfinished or test_items = 0).", ""]

    generations = summary.get("generations", len(search))
    tokens = summary.get("tokens", sum(r.get("tokens", 0) for r in search))
    wall = summary.get("wall_time", search[-1].get("wall_time") if search else None)
    elapsed = records[-1]["time"] - records[0]["time"] if len(records) > 1 and "time" in records[0] else None
    popsize = summary.get("popsize", (config.get("search") or {}).get("popsize", "-"))
    sigma = f"{summary['sigma']:.3g}" if "sigma" in summary else "-"
    lines += ["| generations | evaluations | generated tokens | search wall time | run time | "
              "search dimension | population | strategy | final sigma |",
              "|---|---|---|---|---|---|---|---|---|",
              f"| {generations} | {summary.get('evaluations', '-')} | {tokens:,} | {_duration(wall)} | "
              f"{_duration(elapsed)} | {summary.get('search_dimension', '-')} | {popsize} | "
              f"{summary.get('strategy', '-')} | {sigma} |",
              "",
              "Search wall time counts the generations only; run time runs from the first to the "
              "last metrics line (validation and final evaluation included, model loading and the "
              "SFT warm start not).", ""]
    if val:
        lines += [f"Validation {metric} of the mean vector during the search (generation -1 is the "
                  "starting adapter):", "", f"| generation | {metric} | search wall time | tokens |",
                  "|---|---|---|---|"]
        lines += [f"| {r['generation']} | {pct(r['val_accuracy'])} | {_duration(r.get('wall_time'))} | "
                  f"{r.get('tokens_total', 0):,} |" for r in val]
        lines.append("")
    lines += ["![fitness and validation accuracy](fitness.png)", ""]
    return "\n".join(lines)


def write_report(run_dir: str | Path) -> Path:
    """Write report.md and fitness.png into run_dir (atomically); return the report's path."""
    run_dir = Path(run_dir)
    config, records, summary = load_run(run_dir)
    plot_fitness(records, run_dir / "fitness.png", f"ESSA run {config.get('name', run_dir.name)}")
    path = run_dir / "report.md"
    atomic_write(path, render_report(config, records, summary))
    return path
