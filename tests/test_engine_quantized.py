"""The real vLLM CPU engine on the INT8 (W8A8, compressed-tensors) demo model, candidates as LoRA
adapters on top: distinct candidates stay distinct in one pass, a candidate repeats itself, its
log-likelihoods stay close to the unquantized model's, and the impossible combinations fail at
start-up with the reason."""

import pytest
import torch

from essa.config import EngineConfig, ModelConfig
from essa.engines.base import SamplingSettings
from essa.engines.vllm_engine import resolve_mode
from tests.conftest import start_vllm_engine
from tests.test_engine_vllm import PROMPTS, candidates, texts

GREEDY = SamplingSettings(max_tokens=16)
CONTINUATIONS = [" Tom has 7 apples now.", " He has 21 apples.", " The answer is 42.", " 38 apples."]


def test_int8_engine_serves_the_quantized_copy_in_adapter_mode(int8_engine, int8_model):
    assert int8_engine.mode == "adapter" and int8_engine.merged_mode is None
    assert "base int8" in int8_engine.describe() and "mode adapter" in int8_engine.describe()
    # vLLM loaded the compressed-tensors copy, not the bf16 folder
    assert int8_engine.llm.llm_engine.model_config.model == str(int8_model)
    assert int8_engine.llm.llm_engine.model_config.quantization == "compressed-tensors"


def test_int8_candidates_differ_in_one_pass_and_repeat_exactly(int8_engine, small_adapter):
    """Two different candidates give different outputs in one pass; the same candidate twice in
    that pass (and again in a second call of the same shape) gives the same outputs."""
    low, high = candidates(small_adapter, [1.5, 2.5])
    first = int8_engine.generate(PROMPTS, [None, low, high, low], GREEDY)
    base, a, b, a_again = (texts(per) for per in first)
    assert a != b and a != base and b != base
    assert a == a_again
    second = int8_engine.generate(PROMPTS, [None, low, high, low], GREEDY)
    assert [texts(per) for per in second] == [base, a, b, a_again]


def test_int8_log_likelihoods_are_close_to_the_unquantized_model(int8_engine, vllm_lora_engine, small_adapter):
    """The same continuations' log-likelihoods on the INT8 base and on the unquantized base (both
    as adapters, same pass shape), without and with a candidate. Tolerance, per token: at most 0.3
    nats on average and 0.6 for any one (round-to-nearest W8A8 of a 135M model; measured on the
    AVX-512 machine against bf16: mean 0.17, largest 0.33)."""
    cand = candidates(small_adapter, [2.5])[0]
    quantized = int8_engine.adapter_mode.score_continuations(PROMPTS, CONTINUATIONS, [None, cand])
    dense = vllm_lora_engine.adapter_mode.score_continuations(PROMPTS, CONTINUATIONS, [None, cand])
    gaps = []
    for per_q, per_d in zip(quantized, dense):
        for q, d in zip(per_q, per_d):
            assert q.num_tokens == d.num_tokens
            gaps.append(abs(q.logprob - d.logprob) / q.num_tokens)
    print("per-token gaps int8 vs unquantized:", [round(g, 3) for g in gaps])
    assert sum(gaps) / len(gaps) < 0.3 and max(gaps) < 0.6, gaps
    # and the candidate itself moves the INT8 model's scores
    moved = [abs(c.logprob - b.logprob) for b, c in zip(quantized[0], quantized[1])]
    assert max(moved) > 0.05, moved


def test_merged_mode_on_a_quantized_base_is_refused_at_start_up(demo_model, int8_model):
    for mode in ("merged", "hybrid"):
        with pytest.raises(ValueError, match=rf"engine.mode={mode} needs dense base weights.*int8.*"
                                             r"engine.mode=adapter"):
            start_vllm_engine(demo_model, quantization="int8", mode=mode)


def test_a_missing_quantized_copy_names_the_path_and_the_command(demo_model, tmp_path):
    from essa.engines.vllm_engine import VLLMEngine
    missing = tmp_path / "nowhere-int8"
    cfg = ModelConfig(path=str(demo_model), quantization="int8", quantized_path=str(missing))
    with pytest.raises(FileNotFoundError, match=rf"{missing}.*essa quantize .* --scheme int8"):
        VLLMEngine(demo_model, cfg, EngineConfig(kv_cache_gib=1, enforce_eager=True))
    plain = ModelConfig(path=str(demo_model), quantization="int8", quantized_path=str(demo_model))
    with pytest.raises(ValueError, match="is not a quantized checkpoint"):
        VLLMEngine(demo_model, plain, EngineConfig(kv_cache_gib=1, enforce_eager=True))


INT4_CHILD = """
import json, sys
from tests.conftest import start_vllm_engine
from tests.test_engine_vllm import PROMPTS, candidates, texts
from essa.engines.base import SamplingSettings
demo_model, adapter = sys.argv[1:3]
engine = start_vllm_engine(demo_model, quantization="int4", max_loras=3)
cand = candidates(adapter, [2.5])[0]
out = engine.generate(PROMPTS, [None, cand, cand], SamplingSettings(max_tokens=16))
print("RESULT " + json.dumps({"describe": engine.describe(), "mode": engine.mode,
                              "texts": [texts(per) for per in out]}))
"""


def test_int4_runs_where_the_cpu_build_has_its_kernel_and_says_why_not_elsewhere(demo_model, small_adapter):
    """INT4 (W4A16) on the CPU build: vLLM 0.32's wheel has the kernel for AVX-512 CPUs only. On
    such a CPU the engine generates and a candidate changes the output (and repeats itself); on
    others the start-up error names the kernel and the engines that can run INT4. The INT4 engine
    runs in a child process: one more engine in this session would crowd the others' memory."""
    import json
    import subprocess
    import sys

    from essa.engines import vllm_internals
    from essa.quantize.paths import quantized_dir
    from tests.conftest import ROOT
    missing = vllm_internals.cpu_int4_kernel_missing()
    print(f"PyTorch CPU capability {torch.backends.cpu.get_cpu_capability()}; int4 kernel missing: {missing}")
    if missing:
        assert "cpu_gemm_wna16" in missing
        with pytest.raises(RuntimeError, match="engine.backend=transformers.*CUDA vLLM"):
            start_vllm_engine(demo_model, quantization="int4")
        return
    assert quantized_dir(demo_model, "int4").is_dir(), "make setup prepares the int4 copy"
    proc = subprocess.run([sys.executable, "-c", INT4_CHILD, str(demo_model), str(small_adapter)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    assert proc.returncode == 0 and line, proc.stderr[-3000:]
    result = json.loads(line[len("RESULT "):])
    assert result["mode"] == "adapter" and "base int4" in result["describe"]
    base, moved, again = result["texts"]
    assert moved != base and moved == again


def test_lora_device_answers_for_layers_without_a_dense_weight():
    from essa.engines import vllm_internals
    vllm_internals.install_cpu_lora()
    from vllm.lora.layers import base_linear
    layer = torch.nn.Module()
    layer.weight = None  # what the CPU build's oneDNN INT8 kernel leaves
    assert base_linear._get_lora_device(layer) == torch.device("cpu")
    dense = torch.nn.Linear(4, 4)
    assert base_linear._get_lora_device(dense) == dense.weight.device


def test_mode_rules_for_quantized_bases():
    assert resolve_mode("auto", "int8", on_cpu=True, eager=True) == "adapter"
    assert resolve_mode("auto", "int4", on_cpu=True, eager=False) == "adapter"
    assert resolve_mode("auto", "compressed-tensors checkpoint", on_cpu=True) == "adapter"
    assert resolve_mode("adapter", "int8", on_cpu=True) == "adapter"
