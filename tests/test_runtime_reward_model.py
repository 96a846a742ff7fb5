"""A real `mpirun essa-train` run with fitness.kind reward_model: SmolLM2 generating in a vLLM CPU
engine, a tiny Llama reward model (tests/test_reward_model.py) scoring, the baseline on."""

import json
import math

from essa.rundir import read_metrics
from tests.runtime_helpers import ROOT, launch, train_cmd
from tests.test_reward_model import tiny_reward_model


def test_reward_model_search_under_mpirun_with_a_real_engine(tmp_path, demo_model):
    rm = tiny_reward_model(tmp_path / "rm", demo_model)
    sets = {"output_dir": tmp_path, "name": "rm-run", "adapter.init": "fresh",
            "fitness.kind": "reward_model", "fitness.reward_model.path": rm,
            "fitness.reward_model.dtype": "float32", "fitness.reward_model.baseline": "true",
            "engine.enforce_eager": "true", "engine.max_tokens": 12, "engine.kv_cache_gib": 1,
            "search.popsize": 3, "search.mirrored": "false", "search.generations": 2, "search.sigma0": 0.1,
            "fitness.prompts_per_candidate": 4, "runtime.eval_every": 2, "runtime.eval_items": 4,
            "runtime.test_items": 4}
    args = ["--config", str(ROOT / "launch/configs/demo-cpu.yaml"),
            *[a for k, v in sets.items() for a in ("--set", f"{k}={v}")]]
    proc = launch(train_cmd(2, args))
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-4000:]
    run_dir = tmp_path / "rm-run"
    records = read_metrics(run_dir / "metrics.jsonl")
    search = [r for r in records if r["phase"] == "search"]
    assert [r["generation"] for r in search] == [0, 1]
    for r in search:
        assert r["fitness_kind"] == "reward_model" and r["failed"] == 0 and r["tokens"] > 0
        values = [r[f"fitness_{k}"] for k in ("max", "mean", "median")]
        assert all(v is not None and math.isfinite(v) for v in values), r
    # Validation reports the reward model's raw score of the mean vector's greedy answers.
    validation = [r for r in records if r["phase"] == "validation"]
    assert [r["generation"] for r in validation] == [-1, 1]
    assert all(math.isfinite(r["val_accuracy"]) for r in validation)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["fitness_kind"] == "reward_model"
    test = summary["test"]["accuracy"]
    assert set(test) == {"base", "start", "mean", "selected"} and all(math.isfinite(v) for v in test.values())
    assert "reward model LlamaForSequenceClassification" in summary["engines"]["1"]
    assert "reward model loaded in" in err
    assert "validation reward-model score of the start:" in err and "validation accuracy" not in err
    assert "| ESSA, last mean | " in (run_dir / "report.md").read_text()
    # Pairs scored: 2 generations x 3 candidates x 4 prompts, the base model's answers to each
    # generation's 4 prompts once (not once per candidate), validations 2 x 4, final test rows x 4
    # (base, start, last mean, and the selected mean unless it is the last mean, scored once) and
    # final validation 4 (the base only: the start and the last mean were validated in the run).
    rows = 3 + (summary["selected"]["generation"] != 1)
    assert summary["validation"]["from_validations"] == ["mean", "selected", "start"]
    assert f"reward model: {24 + 8 + 8 + 4 * rows + 4} pairs scored" in err, err[-3000:]
