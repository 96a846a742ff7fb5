"""Real runs of `mpirun essa-train` on SmolLM2 with vLLM CPU engines.

The first is the demo's own command path (launch/configs/demo-cpu.yaml, SFT warm start included),
shrunk; the second stops a run with SIGTERM mid-generation.
"""

import json
import re
import signal
import time

from essa.rundir import read_metrics
from essa.runtime import EXIT_REQUEUE
from tests.runtime_helpers import ROOT, launch, train_cmd

# vLLM's own console format: "INFO 11-29 04:15:00 [file.py:123] ..." (colour codes optional)
VLLM_INFO_LINE = re.compile(r"^(\x1b\[[0-9;]*m)?INFO(\x1b\[[0-9;]*m)? \d\d-\d\d \d\d:\d\d:\d\d", re.M)


def _demo_args(sets: dict) -> list[str]:
    return ["--config", str(ROOT / "launch/configs/demo-cpu.yaml"),
            *[a for k, v in sets.items() for a in ("--set", f"{k}={v}")]]


def test_demo_config_shrunk_under_mpirun_three_ranks_real_engines(tmp_path, demo_model):
    sets = {"output_dir": tmp_path, "sft.steps": 2, "sft.eval_examples": 0, "sft.max_examples": 32,
            "engine.enforce_eager": "true",
            "engine.max_tokens": 16, "engine.kv_cache_gib": 1, "search.popsize": 4,
            "search.generations": 2, "fitness.prompts_per_candidate": 4, "runtime.eval_every": 2,
            "runtime.eval_items": 4, "runtime.test_items": 4, "search.sigma0": 0.1}
    proc = launch(train_cmd(3, _demo_args(sets)))
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
    assert set(summary["test"]["accuracy"]) == {"base", "start", "mean", "selected"}
    assert summary["start_adapter"] == str(next((tmp_path / "warm-start").glob("*/adapter_model.safetensors")).parent)
    assert set(summary["validation"]["accuracy"]) == {"base", "start", "mean", "selected"}
    assert summary["search_dimension"] == 30 * 4 * 2 * 8 and summary["popsize"] == 4
    for label in ("best", "mean"):
        assert (run_dir / f"adapter_{label}" / "adapter_model.safetensors").is_file()
    report = (run_dir / "report.md").read_text()
    test_base = 100 * summary["test"]["accuracy"]["base"]
    assert f"| base model | {100 * summary['validation']['accuracy']['base']:.1f}% | {test_base:.1f}% |" in report
    assert "| SFT warm start |" in report and "| ESSA, last mean |" in report
    assert (run_dir / "fitness.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"report: {run_dir / 'report.md'}" in err
    # A quiet console: essa's lines, not vLLM's per-step INFO lines (hundreds in a real run).
    assert not VLLM_INFO_LINE.search(out + err), VLLM_INFO_LINE.search(out + err).group(0)
    assert "reset prefix cache" not in out + err and "[essa " in err
    assert re.search(r"worker rank 1 ready on .*: vllm (bfloat16|float32) \(.*\), eager \(as configured\)", err)
    assert re.search(r"estimate: about \d+ (s|min) more for the remaining 1 generations", err)
    assert set(summary["engines"]) == {"1", "2"} and "eager (as configured)" in summary["engines"]["1"]


def test_sigterm_with_real_engines_stops_after_the_current_pass(tmp_path, demo_model):
    """SIGTERM to mpirun mid-generation: the master abandons the generation and the worker drops
    its queued candidates instead of running them; the job exits 75 within one pass plus 10 s."""
    sets = {"output_dir": tmp_path, "name": "term", "adapter.init": "fresh", "engine.enforce_eager": "true",
            "engine.mode": "hybrid", "engine.max_loras": 2, "engine.max_tokens": 48,
            "engine.kv_cache_gib": 1, "search.popsize": 12, "search.generations": 50,
            "fitness.prompts_per_candidate": 16, "runtime.eval_every": 0}
    proc = launch(train_cmd(2, _demo_args(sets)))
    metrics = tmp_path / "term/metrics.jsonl"
    deadline = time.time() + 600
    while not (metrics.is_file() and read_metrics(metrics)):
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[1][-3000:]
        time.sleep(0.2)
    gen0 = read_metrics(metrics)[0]
    pass_seconds = gen0["gen_seconds"] / (12 / 2)  # two candidates per pass, one worker
    time.sleep(min(2.0, pass_seconds / 3))  # generation 1 is under way, tasks queued at the worker
    t0 = time.time()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=300)
    elapsed = time.time() - t0
    assert proc.returncode == EXIT_REQUEUE, err[-3000:]
    assert "SIGTERM received" in err and "abandoned" in err
    assert elapsed < pass_seconds + 10, (elapsed, pass_seconds, err[-3000:])
    dropped = re.search(r"rank 1: stop received, (\d+) queued task\(s\) dropped", err)
    assert dropped and int(dropped.group(1)) >= 1, (elapsed, pass_seconds, err[-3000:])
    assert not VLLM_INFO_LINE.search(out + err)


def test_ifeval_demo_config_shrunk_under_mpirun_self_warm_start(tmp_path, demo_model):
    """launch/configs/demo-ifeval-cpu.yaml's path, shrunk: the sft.source self warm start (the
    base model samples in a child process, then SFT), the ifeval reward on the workers, and the
    final evaluation on IFEval's test prompts."""
    sets = {"output_dir": tmp_path, "name": "ifd", "sft.self_prompts": 12, "sft.self_samples": 2,
            "sft.steps": 2, "sft.eval_examples": 0, "engine.enforce_eager": "true",
            "engine.max_tokens": 16, "engine.kv_cache_gib": 1, "search.popsize": 2,
            "search.generations": 1, "fitness.prompts_per_candidate": 4, "runtime.eval_every": 0,
            "runtime.eval_items": 4, "runtime.test_items": 6,
            "task.reward_options.level": "instruction"}  # 16 tokens rarely satisfy every constraint
    args = ["--config", str(ROOT / "launch/configs/demo-ifeval-cpu.yaml"),
            *[a for k, v in sets.items() for a in ("--set", f"{k}={v}")]]
    proc = launch(train_cmd(2, args))
    out, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err[-4000:]
    found = re.search(r"sft.source self: (\d+) of 24 sampled answers pass the ifeval reward; (\d+) of 12 "
                      r"prompts kept", err)
    assert found and int(found.group(2)) >= 1, err[-3000:]
    summary = json.loads((tmp_path / "ifd" / "summary.json").read_text())
    warm = next((tmp_path / "warm-start").glob("*/adapter_model.safetensors")).parent
    assert summary["start_adapter"] == str(warm)
    assert summary["test"]["items"] == 6 and set(summary["test"]["accuracy"]) == {"base", "start", "mean"}  # no validation: nothing selected
    assert all(0 <= v <= 1 for v in summary["test"]["accuracy"].values())


def test_demo_config_shrunk_under_mpirun_on_the_int8_base(tmp_path, demo_model, int8_model):
    """`--set model.quantization=int8`: the worker serves the W8A8 copy, candidates as adapters;
    the SFT warm start trains on the unquantized model as before; the dry-run plan names the copy."""
    sets = {"output_dir": tmp_path, "name": "int8", "model.quantization": "int8", "sft.steps": 2,
            "sft.eval_examples": 0, "sft.max_examples": 32, "engine.enforce_eager": "true",
            "engine.max_tokens": 16, "engine.kv_cache_gib": 1, "engine.max_loras": 2,
            "search.popsize": 4, "search.generations": 2, "fitness.prompts_per_candidate": 4,
            "runtime.eval_every": 2, "runtime.eval_items": 4, "runtime.test_items": 4}
    plan = launch(train_cmd(None, [*_demo_args(sets), "--dry-run"]))
    out, err = plan.communicate(timeout=300)
    assert plan.returncode == 0, err[-3000:]
    assert f"base        {int8_model} (int8 (W8A8))" in out + err and "candidates adapter mode" in out + err
    proc = launch(train_cmd(2, _demo_args(sets)))
    out, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err[-4000:]
    assert re.search(r"worker rank 1 ready on .*: vllm \w+ \(.*\), base int8, eager .*, mode adapter", err)
    records = read_metrics(tmp_path / "int8" / "metrics.jsonl")
    search = [r for r in records if r["phase"] == "search"]
    assert [r["generation"] for r in search] == [0, 1] and all(r["failed"] == 0 for r in search)
    summary = json.loads((tmp_path / "int8" / "summary.json").read_text())
    assert "base int8" in summary["engines"]["1"]
    assert set(summary["test"]["accuracy"]) == {"base", "start", "mean", "selected"}
