"""``engine.enforce_eager: auto``: compile only when the run is long enough to win it back.

On the CPU build, torch.compile makes vLLM start minutes later with empty caches and then
generate faster. A short run (an evaluation of a few hundred items, a test, a shrunk demo) is
over before the faster generation pays for the compile. The break-even below is measured by
``benchmarks/engine_cold_start.py`` (benchmarks/RESULTS.md, "Cold start"): generated tokens per
engine at which compile time plus compiled generation equals eager generation. A warm compile
cache makes compiling cheaper than that; the rule does not look for one (a fresh machine, a new
cluster node and CI start cold). On GPUs vLLM's compile and CUDA graphs cost seconds: always on.
"""

from __future__ import annotations

# Generated tokens per engine above which compiling wins on the CPU build, by model dtype
# (measured, rounded; see the module docstring). Compiling costs about the same time in both, but
# the saving per token differs: float32 0.30 ms (AVX-512) and 0.26 ms (AVX2-capped), break-even
# 222k and 305k tokens; bf16 0.46 ms, 161k tokens (AVX-512 with native bf16).
CPU_COMPILE_BREAK_EVEN_TOKENS = {"float32": 300_000, "bfloat16": 150_000, "float16": 150_000}


def choose_eager(setting, on_cpu: bool, planned_tokens: int | None,
                 dtype: str = "float32") -> tuple[bool, str]:
    """(enforce_eager, reason) for ``engine.enforce_eager`` = ``setting`` (True, False or 'auto').

    ``planned_tokens``: the most tokens this engine will generate in the run, if known;
    ``dtype``: the model's resolved dtype."""
    if isinstance(setting, bool):
        return setting, "as configured"
    if not on_cpu:
        return False, "GPU: compiling costs seconds"
    if planned_tokens is None:
        return False, "CPU build, run length unknown: compiled (vLLM's default)"
    even = CPU_COMPILE_BREAK_EVEN_TOKENS[dtype]
    if planned_tokens < even:
        return True, (f"CPU build, at most {planned_tokens:,} tokens planned per engine, under the "
                      f"{even:,} at which compiling pays off in {dtype}")
    return False, (f"CPU build, up to {planned_tokens:,} tokens planned per engine, over the "
                   f"{even:,} at which compiling pays off in {dtype}")
