"""What registering the stop rules' logits processor costs a vLLM engine (engine.stop_at_answer).

The processor (essa/engines/vllm_internals.StopRuleProcessor) is registered only when
``engine.stop_at_answer`` is true. This measures the engine's generation speed with it registered
and not, each in a fresh process (an engine is built with or without it), alternating
``--repeats`` times: the demo's warm start and ``--candidates`` candidates around it, one pass of
``--items`` validation prompts per candidate, as a merged-mode worker runs them. Both arms generate
without a stop rule in their requests and with it in the registered arm's second figure, so the
table separates the cost of the processor's presence from the cost of a rule being checked.

    python benchmarks/stop_rule_overhead.py --repeats 2

Run it alone on the machine. Figures: benchmarks/RESULTS.md ("Token budget").
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def one_arm(config_path: str, registered: bool, items: int, candidates: int, compiled: bool,
            output_dir: str) -> dict:
    """In this process: build the engine, warm it up, time the passes; seconds and tokens."""
    import numpy as np

    from essa.adapters.svd_space import SvdSpace
    from essa.config import load_config
    from essa.data import build_prompts, load_task
    from essa.engines import make_engine
    from essa.engines.base import SamplingSettings
    from essa.engines.stop_rules import rule_for_reward
    from essa.sft import ensure_warm_start

    config = load_config(config_path, [f"engine.stop_at_answer={str(registered).lower()}",
                                       f"engine.enforce_eager={str(not compiled).lower()}",
                                       "engine.mode=merged", f"output_dir={output_dir}"])
    adapter = ensure_warm_start(config)
    engine = make_engine(config.model, config.engine, config.adapter)
    try:
        task = load_task(config.task)
        prompts = build_prompts(engine.tokenizer, task.split(config.task.validation_split)[:items],
                                task.instruction, config.model.chat_template)
        space = SvdSpace.from_folder(adapter, config.adapter.alpha_frac, "relative")
        z = config.search.sigma0 * np.random.default_rng(0).standard_normal((candidates, space.dim))
        cands = [space.candidate(x, f"c{i}") for i, x in enumerate(z)]
        engine.generate(prompts, [cands[0]], SamplingSettings(max_tokens=config.engine.max_tokens))  # warm-up
        out = {}
        rules = [("no rule", None)] + ([("rule", rule_for_reward(task.reward))] if registered else [])
        for label, rule in rules:
            settings = SamplingSettings(max_tokens=config.engine.max_tokens, stop_rule=rule)
            t0 = time.perf_counter()
            tokens = sum(c[0].num_tokens for cand in cands for c in engine.generate(prompts, [cand], settings)[0])
            out[label] = {"seconds": time.perf_counter() - t0, "tokens": tokens}
        return out
    finally:
        engine.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "launch/configs/demo-cpu.yaml"))
    ap.add_argument("--items", type=int, default=32)
    ap.add_argument("--candidates", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--compiled", action="store_true", help="torch.compile both engines (the demo's choice)")
    ap.add_argument("--output-dir", default="runs", help="where the warm start is cached (output_dir)")
    ap.add_argument("--arm", choices=["on", "off"], help=argparse.SUPPRESS)  # a child process
    args = ap.parse_args()
    if args.arm:
        print("RESULT " + json.dumps(one_arm(args.config, args.arm == "on", args.items, args.candidates,
                                             args.compiled, args.output_dir)), flush=True)
        return
    seconds = {"not registered": [], "registered, no rule": [], "registered, rule": []}
    tokens = {}
    for _ in range(args.repeats):
        for arm in ("off", "on"):
            cmd = [sys.executable, __file__, "--arm", arm, "--config", args.config, "--items", str(args.items),
                   "--candidates", str(args.candidates), "--output-dir", args.output_dir] + \
                (["--compiled"] if args.compiled else [])
            out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
            line = next((l for l in out.stdout.splitlines() if l.startswith("RESULT ")), None)
            if line is None:
                raise SystemExit(f"arm {arm} failed:\n{out.stderr[-3000:]}")
            result = json.loads(line[7:])
            if arm == "off":
                seconds["not registered"].append(result["no rule"]["seconds"])
                tokens["not registered"] = result["no rule"]["tokens"]
            else:
                for label in ("no rule", "rule"):
                    seconds[f"registered, {label}"].append(result[label]["seconds"])
                    tokens[f"registered, {label}"] = result[label]["tokens"]
    base = statistics.median(seconds["not registered"])
    print(f"| engine | seconds (median of {args.repeats}) | / not registered | tokens |")
    print("|---|---|---|---|")
    for label, values in seconds.items():
        median = statistics.median(values)
        print(f"| {label} | {median:.1f} ({', '.join(f'{v:.1f}' for v in values)}) | {median / base:.3f} | {tokens[label]} |")


if __name__ == "__main__":
    main()
