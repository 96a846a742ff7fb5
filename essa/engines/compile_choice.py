"""``engine.enforce_eager: auto``: compile only when the run is long enough to win it back.

On the CPU build, torch.compile makes vLLM start minutes later with empty caches and then
generate faster: a short run (an evaluation, a test, a shrunk demo) ends before that pays off.
The break-even, generated tokens per engine at which compile time plus compiled generation equals
eager generation, is measured by ``benchmarks/engine_cold_start.py`` (RESULTS.md, "Cold start").
The rule assumes a cold compile cache (a fresh machine, a new cluster node and CI start cold).
On GPUs vLLM's compile and CUDA graphs cost seconds: always on.
"""

from __future__ import annotations

# Generated tokens per engine above which compiling wins on the CPU build, by model dtype: the
# measured break-evens, rounded (RESULTS.md, "Cold start"). Compiling costs about the same time in
# both dtypes; the saving per generated token differs.
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
    eager = planned_tokens < even
    return eager, (f"CPU build, {'at most' if eager else 'up to'} {planned_tokens:,} tokens planned per "
                   f"engine, {'under' if eager else 'over'} the {even:,} at which compiling pays off in {dtype}")
