"""``model.dtype: auto`` and ``engine.enforce_eager: auto``: the rules, with device facts mocked,
and what they pick on the machine running the tests (printed: pytest -s or the CI log shows it)."""

import pytest

from essa.engines.compile_choice import CPU_COMPILE_BREAK_EVEN_TOKENS, choose_eager
from essa.models.dtype import Device, native_bf16, probe_device, resolve_dtype

AVX2_LAPTOP = Device("cpu", "AMD EPYC", aten_capability="AVX2")
AVX512_NO_BF16 = Device("cpu", "Xeon Skylake", aten_capability="AVX512")
AVX512_BF16 = Device("cpu", "EPYC Genoa", aten_capability="AVX512", cpu_flags=frozenset({"avx512_bf16"}))
AMX = Device("cpu", "Xeon Sapphire Rapids", aten_capability="AVX512", cpu_flags=frozenset({"amx_bf16"}))
CAPPED = Device("cpu", "EPYC Genoa", aten_capability="AVX2", cpu_flags=frozenset({"avx512_bf16"}))
H100 = Device("cuda", "NVIDIA H100", cuda_bf16=True)
V100 = Device("cuda", "Tesla V100", cuda_bf16=False)


@pytest.mark.parametrize("dev,expected", [(AVX2_LAPTOP, "float32"), (AVX512_NO_BF16, "float32"),
                                          (AVX512_BF16, "bfloat16"), (AMX, "bfloat16"),
                                          (CAPPED, "float32"), (H100, "bfloat16"), (V100, "float32")])
def test_auto_picks_bf16_only_where_it_is_native(dev, expected):
    choice = resolve_dtype("auto", dev)
    assert choice.dtype == expected and not choice.warning
    assert choice.reason and choice.describe("auto").startswith(f"model.dtype auto -> {expected} (")


def test_explicit_dtype_is_kept_with_a_warning_where_it_is_slow():
    slow = resolve_dtype("bfloat16", AVX2_LAPTOP)
    assert slow.dtype == "bfloat16" and "emulated" in slow.warning and "float32" in slow.warning
    assert resolve_dtype("bfloat16", AMX).warning == ""
    assert resolve_dtype("float32", AVX2_LAPTOP) == resolve_dtype("float32", AVX2_LAPTOP)
    assert resolve_dtype("float32", AVX2_LAPTOP).warning == ""
    assert resolve_dtype("bfloat16", H100).describe("bfloat16") == "model.dtype bfloat16 (as configured)"
    with pytest.raises(ValueError, match="'bf16' is not allowed; choose one of auto, bfloat16"):
        resolve_dtype("bf16", AVX2_LAPTOP)


def test_this_machine(capsys):
    import torch
    dev = probe_device("cpu")
    choice = resolve_dtype("auto", dev)
    native, reason = native_bf16(dev)
    caps = torch.cpu.get_capabilities()
    assert dev.aten_capability == torch.backends.cpu.get_cpu_capability()
    assert native == (bool(caps.get("avx512_bf16") or caps.get("amx_bf16"))
                      and dev.aten_capability not in ("AVX2", "DEFAULT"))
    assert choice.dtype == ("bfloat16" if native else "float32")
    with capsys.disabled():
        print(f"\n[this machine] {choice.describe('auto')}")


def test_config_default_is_auto_and_a_wrong_dtype_names_the_choices():
    from essa.config import ConfigError, load_config
    assert load_config(None, []).model.dtype == "auto"
    assert load_config(None, []).engine.enforce_eager == "auto"
    assert load_config(None, ["engine.enforce_eager=true"]).engine.enforce_eager is True
    with pytest.raises(ConfigError, match="model.dtype: 'bf16' is not allowed.*'auto', 'bfloat16'"):
        load_config(None, ["model.dtype=bf16"])
    with pytest.raises(ConfigError, match="engine.enforce_eager"):
        load_config(None, ["engine.enforce_eager=sometimes"])


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_compile_only_when_the_run_wins_it_back(dtype):
    even = CPU_COMPILE_BREAK_EVEN_TOKENS[dtype]
    assert choose_eager(True, on_cpu=True, planned_tokens=10**9, dtype=dtype) == (True, "as configured")
    assert choose_eager(False, on_cpu=True, planned_tokens=10, dtype=dtype)[0] is False
    assert choose_eager("auto", on_cpu=False, planned_tokens=10, dtype=dtype)[0] is False  # GPU: cheap
    eager, why = choose_eager("auto", on_cpu=True, planned_tokens=even - 1, dtype=dtype)
    assert eager and f"{even - 1:,} tokens" in why and dtype in why
    assert choose_eager("auto", on_cpu=True, planned_tokens=even, dtype=dtype)[0] is False
    assert choose_eager("auto", on_cpu=True, planned_tokens=None, dtype=dtype)[0] is False


def test_planned_tokens_follow_the_config_and_the_engine_count():
    from essa.config import load_config
    from essa.runtime.plan import planned_tokens_per_engine
    from tests.runtime_helpers import ROOT
    demo = load_config(ROOT / "launch/configs/demo-cpu.yaml", [])
    # 15 generations x 12 candidates x 32 prompts, 6 validations of 100 (the start, then every 3
    # generations), final base/start/mean/selected x 300 test items and the base on validation
    # (the start, the selected and the last mean were validated in the run); 64 tokens
    one = (15 * 12 * 32 + 6 * 100 + 4 * 300 + 100) * 64
    assert planned_tokens_per_engine(demo, ranks=2) == one
    assert planned_tokens_per_engine(demo, ranks=5) == one // 4
    paper = load_config(ROOT / "launch/configs/demo-cpu.yaml", ["search.preset=paper"])
    assert planned_tokens_per_engine(paper, ranks=2) == one - 300 * 64  # the last mean: 3 test rows
    odd = load_config(ROOT / "launch/configs/demo-cpu.yaml", ["search.generations=16"])
    # 16 generations: the last mean is not validated in the run, so the final evaluation does it
    assert planned_tokens_per_engine(odd, ranks=2) == one + (12 * 32 + 100) * 64
    assert one > max(CPU_COMPILE_BREAK_EVEN_TOKENS.values())  # the demo compiles in any dtype
    shrunk = load_config(ROOT / "launch/configs/demo-cpu.yaml", [
        "search.generations=2", "search.popsize=4", "fitness.prompts_per_candidate=4",
        "runtime.eval_items=4", "runtime.test_items=4", "engine.max_tokens=16"])
    assert planned_tokens_per_engine(shrunk, ranks=1) < min(CPU_COMPILE_BREAK_EVEN_TOKENS.values())
