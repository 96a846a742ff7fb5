"""report.md and fitness.png of a run directory (essa.reporting.report, `essa report`)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from essa.reporting.report import write_report

BIN = Path(sys.executable).parent


def fake_run(folder: Path, finished: bool = True, fitness: str = "accuracy") -> Path:
    """A run directory in the format essa-train writes (3 generations, validation at -1 and 2)."""
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(
        {"name": "r1", "seed": 3, "model": {"path": "smollm2-135m-instruct"},
         "task": {"dataset": "arithmetic"}, "adapter": {"init": "sft"}, "fitness": {"kind": fitness},
         "search": {"popsize": 12}}))
    records = [{"time": 100.0, "generation": -1, "phase": "validation", "val_accuracy": 0.4,
                "val_items": 100, "wall_time": 0.0, "tokens_total": 0}]
    for g in range(3):
        records.append({"time": 130.0 + 30 * g, "generation": g, "phase": "search",
                        "fitness_max": 0.5 + 0.1 * g, "fitness_mean": 0.4 + 0.1 * g,
                        "tokens": 1000, "wall_time": 30.0 * (g + 1)})
    records.append({"time": 200.0, "generation": 2, "phase": "validation", "val_accuracy": 0.52,
                    "val_items": 100, "wall_time": 90.0, "tokens_total": 3000})
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    if finished:
        (folder / "summary.json").write_text(json.dumps(
            {"method": "essa", "generations": 3, "evaluations": 36, "tokens": 3000, "wall_time": 90.0,
             "search_dimension": 1920, "popsize": 12, "strategy": "CMAES", "sigma": 0.31,
             "validation": {"items": 100, "accuracy": {"base": 0.05, "start": 0.4, "mean": 0.52}},
             "test": {"items": 200, "accuracy": {"base": 0.06, "start": 0.38, "mean": 0.455}}}))
    return folder


def test_report_table_figures_and_plot(tmp_path):
    run = fake_run(tmp_path / "r1")
    path = write_report(run)
    text = path.read_text()
    assert path == run / "report.md"
    assert "| model | validation (100 items) | test (200 items) |" in text
    assert "| base model | 5.0% | 6.0% |" in text
    assert "| SFT warm start | 40.0% | 38.0% |" in text
    assert "| ESSA, last mean | 52.0% | 45.5% |" in text
    assert "ESSA minus SFT warm start on test: +7.5 points." in text
    assert "| 3 | 36 | 3,000 | 1 min 30 s | 1 min 40 s | 1920 | 12 | CMAES | 0.31 |" in text
    assert "| -1 | 40.0% | 0 s | 0 |" in text and "| 2 | 52.0% | 1 min 30 s | 3,000 |" in text
    png = (run / "fitness.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_report_names_a_dense_fitness_and_handles_an_unfinished_run(tmp_path):
    run = fake_run(tmp_path / "r2", finished=False, fitness="loglik")
    text = write_report(run).read_text()
    assert "fitness `loglik` (a dense option, not the paper's accuracy fitness" in text
    assert "No final evaluation yet" in text
    assert "| 3 | - | 3,000 | 1 min 30 s |" in text


def test_report_of_a_reward_model_run_gives_scores_not_percentages(tmp_path):
    text = write_report(fake_run(tmp_path / "r3", fitness="reward_model")).read_text()
    assert "the reward model's mean score" in text
    assert "| SFT warm start | 0.4000 | 0.3800 |" in text and "| ESSA, last mean | 0.5200 | 0.4550 |" in text
    assert "ESSA minus SFT warm start on test: +0.0750." in text
    assert "| generation | reward-model score |" in text and "| 2 | 0.5200 |" in text
    assert "%" not in text.split("| model |")[1].split("ESSA minus")[0]


def test_essa_report_cli_and_missing_metrics_error(tmp_path):
    run = fake_run(tmp_path / "r3")
    ok = subprocess.run([str(BIN / "essa"), "report", str(run)], capture_output=True, text=True)
    assert ok.returncode == 0 and ok.stdout.strip() == str(run / "report.md")
    (tmp_path / "empty").mkdir()
    bad = subprocess.run([str(BIN / "essa"), "report", str(tmp_path / "empty")],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "no metrics.jsonl" in bad.stderr and str(tmp_path / "empty") in bad.stderr
    with pytest.raises(FileNotFoundError):
        write_report(tmp_path / "nowhere")
