"""Cold start of the vLLM CPU engine: eager against torch.compile, float32 against bf16, same run.

Every configuration starts in a fresh process with its own empty vLLM and TorchInductor cache
folders (as on a fresh machine), then generates the same greedy workload twice (the first pass
may still compile). From the figures it prints the break-even: how many generated tokens a run
needs before compiling wins back its start-up time, which ``engine.enforce_eager: auto`` uses
(essa/engines/compile_choice.py).

    python benchmarks/engine_cold_start.py                         # float32 and bf16, eager and compiled
    python benchmarks/engine_cold_start.py --dtypes float32 --prompts 32 --max-tokens 64
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 python benchmarks/engine_cold_start.py   # AVX2-like
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time


def child(dtype: str, eager: bool, prompts: int, max_tokens: int) -> dict:
    """One configuration in this (fresh) process: start, first pass, steady pass."""
    t0 = time.time()
    from essa.config import EngineConfig, ModelConfig, RunConfig
    from essa.data import build_prompts, load_task
    from essa.engines.base import SamplingSettings
    from essa.engines.vllm_engine import VLLMEngine
    from essa.models import prepare_demo_model
    model = prepare_demo_model(check=False)
    cfg = EngineConfig(max_model_len=512, kv_cache_gib=1, enforce_eager=eager, mode="merged")
    engine = VLLMEngine(model, ModelConfig(path=str(model), dtype=dtype), cfg)
    start = time.time() - t0
    task = load_task(RunConfig().task)
    texts = build_prompts(engine.tokenizer, task.split("validation")[:prompts], task.instruction, True)
    sampling = SamplingSettings(max_tokens=max_tokens)
    passes = []
    for _ in range(2):
        t = time.time()
        out = engine.generate(texts, [None], sampling)[0]
        passes.append((time.time() - t, sum(c[0].num_tokens for c in out)))
    engine.close()
    return {"dtype": dtype, "eager": eager, "start_s": round(start, 1),
            "first_pass_s": round(passes[0][0], 2), "steady_tok_s": round(passes[1][1] / passes[1][0], 1),
            "tokens_per_pass": passes[1][1]}


def run_fresh(dtype: str, eager: bool, args) -> dict:
    """``child`` in a new process with empty compile caches."""
    with tempfile.TemporaryDirectory(prefix="essa-cold-") as tmp:
        env = {**os.environ, "VLLM_CACHE_ROOT": f"{tmp}/vllm", "TORCHINDUCTOR_CACHE_DIR": f"{tmp}/inductor"}
        cmd = [sys.executable, __file__, "--child", dtype, str(int(eager)),
               "--prompts", str(args.prompts), "--max-tokens", str(args.max_tokens)]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"{dtype} eager={eager} failed:\n{proc.stderr[-3000:]}")
        return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], bool(int(args.child[1])), args.prompts, args.max_tokens)))
        return
    import torch
    print(f"PyTorch CPU capability {torch.backends.cpu.get_cpu_capability()}, "
          f"avx512_bf16 {torch.cpu._is_avx512_bf16_supported()}, {os.cpu_count()} cores")
    rows = [run_fresh(d, e, args) for d in args.dtypes for e in (True, False)]
    base = rows[0]["steady_tok_s"]
    print(f"{'dtype':9} {'mode':9} {'start s':>8} {'1st pass s':>10} {'tok/s':>7} {'vs ' + rows[0]['dtype'] + ' eager':>16}")
    for r in rows:
        r["ratio"] = round(r["steady_tok_s"] / base, 3)
        print(f"{r['dtype']:9} {'eager' if r['eager'] else 'compiled':9} {r['start_s']:8.1f} "
              f"{r['first_pass_s']:10.2f} {r['steady_tok_s']:7.1f} {r['ratio']:16.3f}")
    for d in args.dtypes:
        eager, comp = [r for r in rows if r["dtype"] == d]
        extra = comp["start_s"] + comp["first_pass_s"] - eager["start_s"] - eager["first_pass_s"]
        gain = 1 / eager["steady_tok_s"] - 1 / comp["steady_tok_s"]  # seconds saved per token
        even = extra / gain if gain > 0 else float("inf")
        print(f"{d}: compiling costs {extra:.0f} s more to start and saves {1e3 * gain:.2f} ms per "
              f"token: break-even at {even:,.0f} generated tokens")
        for r in (eager, comp):
            r["break_even_tokens"] = round(even) if even != float("inf") else None  # never
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
