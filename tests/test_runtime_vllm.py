"""One real run: `mpirun -n 3 essa-train` on SmolLM2 with two vLLM CPU engines, 2 generations.

It is the demo's own command path (launch/configs/demo-cpu.yaml, SFT warm start included), shrunk.
"""

import json

from essa.rundir import read_metrics
from tests.runtime_helpers import ROOT, launch, train_cmd


def test_demo_config_shrunk_under_mpirun_three_ranks_real_engines(tmp_path, demo_model):
    sets = {"output_dir": tmp_path, "sft.steps": 2, "sft.eval_examples": 0, "sft.max_examples": 32,
            "engine.enforce_eager": "true",
            "engine.max_tokens": 16, "engine.kv_cache_gib": 1, "search.popsize": 4,
            "search.generations": 2, "fitness.prompts_per_candidate": 4, "runtime.eval_every": 2,
            "runtime.eval_items": 4, "runtime.test_items": 4, "search.sigma0": 0.1}
    args = ["--config", str(ROOT / "launch/configs/demo-cpu.yaml"),
            *[a for k, v in sets.items() for a in ("--set", f"{k}={v}")]]
    proc = launch(train_cmd(3, args))
    out, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err[-4000:]
    run_dir = tmp_path / "demo-cpu"
    records = read_metrics(run_dir / "metrics.jsonl")
    search = [r for r in records if r["phase"] == "search"]
    assert [r["generation"] for r in search] == [0, 1]
    for r in search:
        assert 0 <= r["fitness_max"] <= 1 and r["fitness_kind"] == "accuracy" and r["failed"] == 0
        assert r["tokens"] > 0 and r["evals_per_s"] > 0
    start, val = [r for r in records if r["phase"] == "validation"]
    assert start["generation"] == -1 and start["wall_time"] == 0 and start["tokens_total"] == 0
    assert val["val_items"] == 4 and 0 <= val["val_accuracy"] <= 1
    assert val["wall_time"] == search[-1]["wall_time"]
    assert val["tokens_total"] == sum(r["tokens"] for r in search)
    assert "worker rank 1 ready" in err and "worker rank 2 ready" in err
    assert len(list((tmp_path / "warm-start").glob("*/adapter_model.safetensors"))) == 1
    summary = json.loads((run_dir / "summary.json").read_text())
    assert set(summary["test"]["accuracy"]) == {"base", "start", "mean"}
    assert set(summary["validation"]["accuracy"]) == {"base", "start", "mean"}
    assert summary["search_dimension"] == 30 * 4 * 2 * 8 and summary["popsize"] == 4
    for label in ("best", "mean"):
        assert (run_dir / f"adapter_{label}" / "adapter_model.safetensors").is_file()
    report = (run_dir / "report.md").read_text()
    test_base = 100 * summary["test"]["accuracy"]["base"]
    assert f"| base model | {100 * summary['validation']['accuracy']['base']:.1f}% | {test_base:.1f}% |" in report
    assert "| SFT warm start |" in report and "| ESSA (mean vector) |" in report
    assert (run_dir / "fitness.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"report: {run_dir / 'report.md'}" in err
