"""benchmarks/gpu_check.py in its CPU mode: every check of the device run (trl SFT, QLoRA, GRPO, ESSA
under mpirun with the transformers engine, engine against peft) on a tiny model it builds itself."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from conftest import ROOT, VENV_BIN

pytestmark = [pytest.mark.model, pytest.mark.mpi]

CHECKS = ("sft_bf16", "sft_qlora", "grpo", "essa_none", "essa_int8", "essa_int4", "engine_vs_peft")
MUST_PASS = ("sft_bf16", "grpo", "essa_none", "engine_vs_peft")


@pytest.fixture(scope="module")
def cpu_check(tmp_path_factory):
    """One ``gpu_check.py --device cpu`` run: (CompletedProcess, the JSON it wrote, seconds)."""
    out = tmp_path_factory.mktemp("gpu-check") / "check.json"
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}
    t0 = time.time()
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks/gpu_check.py"), "--device", "cpu",
                           "--json", str(out)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=900)
    seconds = time.time() - t0
    assert out.is_file(), proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc, json.loads(out.read_text()), seconds


def test_cpu_mode_exits_0_with_every_check(cpu_check):
    proc, report, _ = cpu_check
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert tuple(report["checks"]) == CHECKS
    for name, row in report["checks"].items():
        assert row["status"] in ("pass", "skipped"), (name, row)
        assert isinstance(row["seconds"], (int, float)) and row["seconds"] >= 0
        if row["status"] == "skipped":
            assert row["reason"].strip(), name
    for name in MUST_PASS:
        assert report["checks"][name]["status"] == "pass", (name, report["checks"][name])
    assert "| check | status |" in proc.stdout and "no check failed" in proc.stdout


def test_sft_loss_falls_and_speeds_are_recorded(cpu_check):
    row = cpu_check[1]["checks"]["sft_bf16"]
    losses = row["losses"]
    assert len(losses) == 20
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5
    assert row["loss_last_mean"] < row["loss_first_mean"]
    assert row["files"] == {"adapter_config.json": True, "adapter_model.safetensors": True}
    assert row["trainer"] == "trl" and row["train_loop_seconds"] > 0
    assert row["tokens_per_s"] > 0 and row["forward_tokens_per_s"] > 0 and row["train_tokens"] > 0
    assert row["peak_memory_mib"] > 0
    qlora = cpu_check[1]["checks"]["sft_qlora"]
    if qlora["status"] == "pass":
        assert qlora["peak_vs_bf16"] > 0 and len(qlora["losses"]) == 10


def test_grpo_essa_and_peft_rows(cpu_check):
    checks = cpu_check[1]["checks"]
    assert checks["grpo"]["steps"] == 5 and checks["grpo"]["adapter_final_lora_tensors"] > 0
    for name in ("essa_none", "essa_int8", "essa_int4"):
        if checks[name]["status"] == "pass":
            assert checks[name]["generations"] == [0, 1] and checks[name]["exit_code"] == 0
            assert checks[name]["search_tokens"] > 0
    fp32 = checks["engine_vs_peft"]["modes"]["fp32"]
    assert fp32["ok"] and fp32["differs_from_base"] and fp32["max_diff_per_token"] <= 1e-3


def test_device_facts_and_runtime(cpu_check):
    _, report, seconds = cpu_check
    facts = report["facts"]
    assert facts["device"] == "cpu" and facts["torch"] and facts["cpu"]["cores"] >= 1
    assert facts["libraries"]["transformers"] and facts["mpirun"]
    assert report["date"] and report["total_seconds"] > 0
    assert 1e5 <= report["model"]["parameters"] <= 1e6  # "a few hundred thousand"
    print(f"gpu_check --device cpu: {seconds:.1f} s in all ({report['total_seconds']} s inside)")
