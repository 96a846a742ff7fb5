"""One real run: `mpirun -n 3 essa-train` on SmolLM2 with two vLLM CPU engines, 2 generations."""

import json

from essa.rundir import read_metrics
from tests.runtime_helpers import ROOT, launch, train_cmd


def test_mpirun_three_ranks_real_engines_two_generations(tmp_path, demo_model):
    from essa.adapters.init import write_fresh_adapter
    adapter = write_fresh_adapter(demo_model, tmp_path / "start", rank=8, rel_norm=0.02)
    sets = {"output_dir": tmp_path, "adapter.init": adapter, "engine.enforce_eager": "true",
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
    (val,) = [r for r in records if r["phase"] == "validation"]
    assert val["val_items"] == 4 and 0 <= val["val_accuracy"] <= 1
    assert "worker rank 1 ready" in err and "worker rank 2 ready" in err
    summary = json.loads((run_dir / "summary.json").read_text())
    assert set(summary["test"]["accuracy"]) == {"base", "start", "mean"}
    for label in ("best", "mean"):
        assert (run_dir / f"adapter_{label}" / "adapter_model.safetensors").is_file()
