"""Token budget of stopping at the answer (engine.stop_at_answer, #21): the same prompts generated
with the stop rule off and on, in one run on one engine.

Settings: the CPU demo (launch/configs/demo-cpu.yaml: SmolLM2, arithmetic, answer-line rule)
with its SFT warm-start adapter, with ESSA candidates around it (the worker's case during a run)
and with the base model; GSM8K with the base model (test split, answer-line rule). For each: generated tokens per completion and seconds with the rule off and on, their
ratios (on / off), the accuracy of both, and the share of completions whose reward changed
(expected 0: the rule only drops text after the decided answer).

    python benchmarks/token_budget.py                                # both settings, 64 items each
    python benchmarks/token_budget.py --items 32 --gsm8k-max-tokens 192 --repeats 2 --json out.json

The warm start is trained first if it is not cached (about a minute). Run it alone on the machine:
vLLM's CPU threads slow down many times when they share the cores. Figures: benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def measure(engine, prompts, golds, candidates, reward, max_tokens, rule, repeats):
    """Rule off and on, alternating ``repeats`` times, every prompt under each candidate (one
    pass per candidate, as a merged-mode worker runs them); one row of figures (median seconds)."""
    from essa.engines.base import SamplingSettings
    runs = {"off": [], "on": []}
    outputs = {}
    for _ in range(repeats):
        for key, stop_rule in (("off", None), ("on", rule)):
            settings = SamplingSettings(max_tokens=max_tokens, stop_rule=stop_rule)
            t0 = time.perf_counter()
            outs = [engine.generate(prompts, [cand], settings)[0] for cand in candidates]
            runs[key].append(time.perf_counter() - t0)
            outputs[key] = [samples[0] for out in outs for samples in out]
    golds = golds * len(candidates)
    scores = {key: reward([c.text for c in outs], golds) for key, outs in outputs.items()}
    tokens = {key: sum(c.num_tokens for c in outs) / len(outs) for key, outs in outputs.items()}
    seconds = {key: statistics.median(values) for key, values in runs.items()}
    changed = sum(a != b for a, b in zip(scores["off"], scores["on"]))
    completions = len(golds)
    return {"items": completions, "max_tokens": max_tokens, "rule": rule,
            "tokens_per_completion_off": round(tokens["off"], 1),
            "tokens_per_completion_on": round(tokens["on"], 1),
            "token_ratio": round(tokens["on"] / tokens["off"], 3),
            "seconds_off": round(seconds["off"], 1), "seconds_on": round(seconds["on"], 1),
            "seconds_ratio": round(seconds["on"] / seconds["off"], 3),
            "accuracy_off": round(sum(scores["off"]) / completions, 3),
            "accuracy_on": round(sum(scores["on"]) / completions, 3),
            "stopped_early": sum(a.num_tokens > b.num_tokens
                                 for a, b in zip(outputs["off"], outputs["on"])),
            "reward_changed_share": round(changed / completions, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(ROOT / "launch/configs/demo-cpu.yaml"))
    parser.add_argument("--items", type=int, default=64, help="demo validation items")
    parser.add_argument("--candidates", type=int, default=4,
                        help="ESSA candidates around the warm start (z ~ N(0, search.sigma0^2)); 0: skip")
    parser.add_argument("--gsm8k-items", type=int, default=64, help="GSM8K test items (0: skip)")
    parser.add_argument("--gsm8k-max-tokens", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=1, help="off/on pairs per setting (median seconds)")
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args()

    import numpy as np

    from essa.adapters.svd_space import SvdSpace
    from essa.config import load_config
    from essa.data import build_prompts, load_task
    from essa.engines import make_engine
    from essa.engines.stop_rules import rule_for_reward
    from essa.rewards import get_reward
    from essa.sft import ensure_warm_start

    # eager (no compile wait) and room for GSM8K prompts; one engine serves both settings
    config = load_config(args.config, ["engine.enforce_eager=true", "engine.max_model_len=1024"])
    adapter = ensure_warm_start(config)
    engine = make_engine(config.model, config.engine, config.adapter)
    print(f"engine: {engine.describe()}", flush=True)
    rows = {}
    try:
        task = load_task(config.task)
        items = task.split(config.task.validation_split)[:args.items]
        prompts = build_prompts(engine.tokenizer, items, task.instruction, config.model.chat_template)
        engine.generate(prompts[:2], [str(adapter)], None)  # warm-up
        golds, reward, rule = [e.answer for e in items], get_reward(task.reward), rule_for_reward(task.reward)
        rows["demo: SFT adapter, arithmetic"] = measure(
            engine, prompts, golds, [str(adapter)], reward, config.engine.max_tokens, rule, args.repeats)
        if args.candidates:
            space = SvdSpace.from_folder(adapter, config.adapter.alpha_frac, "relative")
            z = config.search.sigma0 * np.random.default_rng(0).standard_normal((args.candidates, space.dim))
            cands = [space.candidate(x, f"c{i}") for i, x in enumerate(z)]
            rows[f"demo: {args.candidates} ESSA candidates"] = measure(
                engine, prompts, golds, cands, reward, config.engine.max_tokens, rule, args.repeats)
        rows["arithmetic, base model"] = measure(
            engine, prompts, golds, [None], reward, config.engine.max_tokens, rule, args.repeats)
        print(json.dumps(rows), flush=True)
        if args.gsm8k_items:
            gsm_cfg = load_config(args.config, ["task.dataset=gsm8k"])
            gsm = load_task(gsm_cfg.task)
            items = gsm.split(gsm_cfg.task.test_split)[:args.gsm8k_items]
            prompts = build_prompts(engine.tokenizer, items, gsm.instruction, config.model.chat_template)
            rows["gsm8k, base model"] = measure(
                engine, prompts, [e.answer for e in items], [None], get_reward(gsm.reward),
                args.gsm8k_max_tokens, rule_for_reward(gsm.reward), args.repeats)
    finally:
        engine.close()
    print(f"{'setting':30} {'tok/compl off':>13} {'on':>6} {'ratio':>6} {'s off':>6} {'s on':>6} "
          f"{'ratio':>6} {'acc off':>7} {'acc on':>6} {'stopped':>7} {'reward changed':>14}")
    for name, r in rows.items():
        print(f"{name:30} {r['tokens_per_completion_off']:>13} {r['tokens_per_completion_on']:>6} "
              f"{r['token_ratio']:>6} {r['seconds_off']:>6} {r['seconds_on']:>6} {r['seconds_ratio']:>6} "
              f"{r['accuracy_off']:>7} {r['accuracy_on']:>6} {r['stopped_early']:>4}/{r['items']:<3} "
              f"{r['reward_changed_share']:>14}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
