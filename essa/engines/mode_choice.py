"""``engine.mode: auto`` and the combinations no vLLM engine can run (no vLLM import: the
``--dry-run`` plan uses it)."""

from __future__ import annotations


def resolve_mode(mode: str, quantization: str, on_cpu: bool, tensor_parallel_size: int = 1,
                 eager: bool = False) -> str:
    """The concrete candidate mode for ``engine.mode``; impossible combinations fail here.

    ``auto``: adapter where the base is quantized (no dense weights to merge into), on GPUs and
    with tensor parallelism; on the CPU build hybrid in eager mode, merged with torch.compile
    (benchmarks/RESULTS.md, "Own CPU LoRA product and hybrid mode", "LoRA engines keep torch.compile")."""
    if mode in ("merged", "hybrid") and (quantization != "none" or tensor_parallel_size > 1):
        why = (f"needs dense base weights to add each candidate into, and a quantized base "
               f"({quantization}) keeps packed integer weights; use"
               if quantization != "none" else "does not support tensor_parallel_size > 1 yet; use")
        raise ValueError(f"engine.mode={mode} {why} engine.mode=adapter (or auto)")
    if mode != "auto":
        return mode
    if quantization != "none" or tensor_parallel_size > 1 or not on_cpu:
        return "adapter"
    return "hybrid" if eager else "merged"
