"""Candidate throughput of the vLLM engine: ESSA evaluation vs plain generation, same run.

For K candidates (each its own weights) x B prompts, tokens/s of the engine in merged and adapter
mode over tokens/s of plain vLLM generation (no LoRA) on the same K x B requests. Also the swap
cost per candidate (merged: add + restore; adapter: write + load + remove) and the SVD-LoRA
materialize + write time against one candidate's evaluation time.

    python benchmarks/engine_throughput.py                       # B in {16, 64}, K in {1, 4, 8}
    python benchmarks/engine_throughput.py --batch-sizes 16 --candidates 1 4 --max-tokens 32
    python benchmarks/engine_throughput.py --batch-sizes 64 --candidates 8 --modes merged --repeats 3

With --repeats N every cell measures plain and ESSA N times, alternating (plain, ESSA, plain, ...),
and reports the medians and the median of the N paired ratios (single pairs are noisy on a shared
machine). Figures: benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--candidates", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--modes", nargs="+", default=["merged", "adapter"], choices=["auto", "merged", "adapter", "hybrid", "adapter-vllm-ops"],
                        help="auto: engine.mode's default (on the CPU build hybrid with --eager, merged "
                             "without); adapter-vllm-ops: adapter mode with vLLM's own CPU LoRA "
                             "ops instead of essa.engines.vllm_cpu_lora (same engine, ops swapped; "
                             "needs --eager: a compiled graph keeps the operator it was traced with)")
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--eager", action="store_true", help="enforce_eager (skip torch.compile)")
    parser.add_argument("--repeats", type=int, default=1, help="paired plain/ESSA measurements per cell")
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args()
    if "adapter-vllm-ops" in args.modes and not args.eager:
        parser.error("--modes adapter-vllm-ops needs --eager (the compiled graph calls our LoRA operator)")

    from essa.adapters.init import write_fresh_adapter
    from essa.adapters.svd_space import SvdSpace
    from essa.config import EngineConfig, ModelConfig, RunConfig
    from essa.data import build_prompts, load_task
    from essa.engines import vllm_internals
    from essa.engines.base import SamplingSettings
    from essa.engines.lora_weights import module_deltas
    from essa.engines.vllm_engine import VLLMEngine, resolve_mode
    from essa.models import prepare_demo_model

    model = prepare_demo_model(check=False)
    tmp = Path(tempfile.mkdtemp(prefix="essa-bench-"))
    space = SvdSpace.from_folder(write_fresh_adapter(model, tmp / "adapter", rank=8, rel_norm=0.02))
    rng = np.random.default_rng(0)
    v0 = space.start_vector()
    vectors = [v0 * (1 + 0.3 * rng.standard_normal(space.dim)) for _ in range(max(args.candidates))]
    task = load_task(RunConfig().task)
    sampling = SamplingSettings(max_tokens=args.max_tokens)

    def engine(mode):
        cfg = EngineConfig(max_model_len=512, kv_cache_gib=2, enforce_eager=args.eager, mode=mode,
                           max_loras=max(args.candidates))
        return VLLMEngine(model, ModelConfig(path=str(model)), cfg)

    def timed(eng, prompts, cands, mode="merged"):
        """(tokens/s, seconds) of one call; ``eng`` is an engine or one of its two modes."""
        vllm_ops = mode == "adapter-vllm-ops"
        if vllm_ops:
            vllm_internals.uninstall_cpu_lora()
        t = time.perf_counter()
        try:
            out = eng.generate(prompts, cands, sampling)
        finally:
            seconds = time.perf_counter() - t
            if vllm_ops:
                vllm_internals.install_cpu_lora()
        return sum(c[0].num_tokens for per in out for c in per) / seconds, seconds

    engines = {"merged": engine("merged")}  # plain generation runs on the LoRA-free engine
    from vllm.platforms import current_platform
    on_cpu = current_platform.is_cpu()
    auto_mode = resolve_mode("auto", "none", on_cpu, eager=args.eager)
    if {"auto", "adapter", "hybrid", "adapter-vllm-ops"} & set(args.modes):
        lora = engine("hybrid" if on_cpu else "adapter")  # LoRA on; on the CPU also merged weights
        # adapter rows run the adapter mode alone (the hybrid engine would merge one candidate)
        engines.update({"auto": lora, "adapter": lora.adapter_mode, "hybrid": lora,
                        "adapter-vllm-ops": lora.adapter_mode})
    if auto_mode == "merged":
        engines["auto"] = engines["merged"]
    rows = []
    for b in args.batch_sizes:
        prompts = build_prompts(engines["merged"].tokenizer, task.split("validation")[:b], task.instruction)
        timed(engines["merged"], prompts[:4], [None])  # warm-up
        for k in args.candidates:
            cands = [space.candidate(v, f"c{i}") for i, v in enumerate(vectors[:k])]
            plain, essa = [], {mode: [] for mode in args.modes}
            for _ in range(args.repeats):
                plain.append(timed(engines["merged"], prompts * k, [None]))
                for mode in args.modes:
                    essa[mode].append(timed(engines[mode], prompts, cands, mode))
            for mode in args.modes:
                ratios = [e[0] / p[0] for e, p in zip(essa[mode], plain)]
                row = {"mode": mode if mode != "auto" else f"auto ({auto_mode})", "B": b, "K": k, "repeats": args.repeats,
                       "plain_tok_s": round(float(np.median([p[0] for p in plain])), 1),
                       "essa_tok_s": round(float(np.median([e[0] for e in essa[mode]])), 1),
                       "ratio": round(float(np.median(ratios)), 3),
                       "ratios": [round(r, 3) for r in ratios],
                       "seconds_per_candidate": round(float(np.median([e[1] for e in essa[mode]])) / k, 2)}
                rows.append(row)
                print(json.dumps(row), flush=True)

    # Swap cost per candidate against one candidate's evaluation (B = the first batch size).
    b = args.batch_sizes[0]
    prompts = build_prompts(engines["merged"].tokenizer, task.split("validation")[:b], task.instruction)
    cand = space.candidate(vectors[0])
    _, eval_s = timed(engines["merged"], prompts, [cand])
    t = time.perf_counter()
    for _ in range(5):
        engines["merged"].merged_mode.weights.apply(module_deltas(cand))
        engines["merged"].merged_mode.weights.restore()
    merged_swap = (time.perf_counter() - t) / 5
    t = time.perf_counter()
    for i in range(20):
        space.write_candidate(vectors[0], tmp / f"w{i}")
    materialize_write = (time.perf_counter() - t) / 20
    swap = {"B": b, "eval_seconds_per_candidate": round(eval_s, 3),
            "merged_apply_restore_s": round(merged_swap, 4),
            "merged_swap_share": round(merged_swap / eval_s, 4),
            "materialize_write_s": round(materialize_write, 4),
            "materialize_write_share": round(materialize_write / eval_s, 4)}
    if "adapter" in engines:
        adapter_mode = engines["adapter"]
        t = time.perf_counter()
        for _ in range(5):
            entry = adapter_mode.load(cand)
            adapter_mode.llm.llm_engine.add_lora(entry[0])
            adapter_mode.unload(entry)
        adapter_swap = (time.perf_counter() - t) / 5
        swap.update(adapter_write_load_remove_s=round(adapter_swap, 4),
                    adapter_swap_share=round(adapter_swap / eval_s, 4))
    print(json.dumps(swap), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "swap": swap}, indent=2))
    for eng in {id(e): e for e in engines.values() if isinstance(e, VLLMEngine)}.values():
        eng.close()


if __name__ == "__main__":
    main()
