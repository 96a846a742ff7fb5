"""The real entry points, end to end on the demo model with tiny settings."""

import json

from essa.rundir import read_metrics
from tests.conftest import ROOT, run_cli

FAST = ["--set", "engine.enforce_eager=true", "--set", "engine.max_tokens=24",
        "--set", "engine.memory_fraction=0.1"]


def test_essa_train_demo_config_writes_run_directory(tmp_path, demo_model):
    """The demo config with a fresh adapter and the stand-in evaluator (the real engines run in
    tests/test_runtime_vllm.py): run directory, metrics, checkpoint, exported adapters."""
    out = run_cli(["essa-train", "--config", str(ROOT / "launch/configs/demo-cpu.yaml"), *FAST,
                   "--set", f"output_dir={tmp_path}", "--set", "adapter.init=fresh",
                   "--set", "runtime.evaluator=fake", "--set", "search.generations=2",
                   "--set", "search.popsize=4", "--set", "runtime.eval_every=1",
                   "--set", "runtime.eval_items=6", "--set", "runtime.test_items=4"])
    assert out.returncode == 0, out.stderr[-3000:]
    run_dir = tmp_path / "demo-cpu"
    assert "max_tokens: 24" in (run_dir / "config.yaml").read_text()
    records = read_metrics(run_dir / "metrics.jsonl")
    assert [(r["generation"], r["phase"]) for r in records] == [
        (-1, "validation"), (0, "search"), (0, "validation"), (1, "search"), (1, "validation"),
        (2, "final_validation"), (2, "test")]
    assert records[2]["val_items"] == 6 and 0.0 <= records[2]["val_accuracy"] <= 1.0
    assert records[-1]["test_items"] == 4 and records[-2]["final_validation_items"] == 6
    assert (run_dir / "start_adapter/adapter_model.safetensors").is_file()
    assert json.loads((run_dir / "checkpoint/state.json").read_text())["generation"] == 2
    assert (run_dir / "adapter_best/adapter_config.json").is_file()
    assert "summary: 2 generations" in (run_dir / "run.log").read_text()


def test_essa_eval_two_datasets_with_limit(tmp_path, demo_model, small_adapter):
    import shutil
    run_dir = tmp_path / "some-run"  # an essa-train run directory: its adapter_mean/ is used
    shutil.copytree(small_adapter, run_dir / "adapter_mean")
    out = run_cli(["essa-eval", "--datasets", "arithmetic,gsm8k", "--limit", "3", *FAST,
                   "--adapter", str(run_dir), "--output", str(tmp_path)])
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["adapter"] == str(run_dir / "adapter_mean")
    assert set(summary["datasets"]) == {"arithmetic", "gsm8k"}
    for name, stats in summary["datasets"].items():
        assert stats["items"] == 3 and 0 <= stats["greedy_accuracy"] <= 1 and stats["tokens"] > 0
        rows = [json.loads(l) for l in (tmp_path / f"completions-{name}.jsonl").read_text().splitlines()]
        assert len(rows) == 3 and all(len(r["completions"]) == 1 for r in rows)
        # Every stored score is the reward of the stored completion (one code path).
        from essa.rewards import get_reward
        reward = get_reward(stats["reward"])
        assert [r["scores"][0] for r in rows] == reward([r["completions"][0] for r in rows],
                                                        [r["gold"] for r in rows])
    assert "greedy acc" in out.stdout


def test_essa_eval_refuses_a_missing_dataset_before_loading_the_model(tmp_path):
    out = run_cli(["essa-eval", "--datasets", str(tmp_path / "missing.jsonl"), "--output", str(tmp_path)])
    assert out.returncode != 0 and "missing.jsonl" in out.stderr
