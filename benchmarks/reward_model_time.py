"""Reward-model fitness against generation, per candidate: what `fitness.kind: reward_model` adds.

    .venv/bin/python benchmarks/reward_model_time.py --rounds 4

One candidate of the demo set-up: 32 arithmetic prompts, greedy, at most 64 tokens, SmolLM2-135M
in the vLLM CPU engine (eager, merged). Its 32 (question, completion) pairs are then scored by a
reward model as large as the policy: SmolLM2-135M loaded as ``LlamaForSequenceClassification``
with a randomly initialised score head (the time does not depend on the head's values), in
float32 and bfloat16 at two batch sizes. Generation and scoring alternate, so each ratio is taken
within one round on the same machine state; the median over rounds is printed (machine idle:
vLLM's bound OpenMP threads slow down many times when another process shares the cores).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def make_reward_model(policy: Path, folder: Path) -> Path:
    """The policy's weights under a fresh one-output score head, with its tokenizer."""
    import torch
    from transformers import AutoTokenizer, LlamaForSequenceClassification
    torch.manual_seed(0)
    model = LlamaForSequenceClassification.from_pretrained(policy, num_labels=1, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(policy)
    model.config.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args(argv)

    import torch
    from essa.config.schema import ArithmeticConfig, RewardModelConfig
    from essa.data import build_prompts
    from essa.data.arithmetic import INSTRUCTION, generate_splits
    from essa.engines.base import SamplingSettings
    from essa.models import prepare_demo_model
    from essa.reward_model.scorer import RewardModelScorer
    from tests.conftest import start_vllm_engine

    policy = prepare_demo_model(check=False)
    work = Path(tempfile.mkdtemp(prefix="rm-bench-"))
    try:
        rm_folder = make_reward_model(policy, work / "rm")
        engine = start_vllm_engine(policy, mode="merged")
        examples = generate_splits(ArithmeticConfig(), 1234)["train"][:32]
        prompts = build_prompts(engine.tokenizer, examples, INSTRUCTION)
        sampling = SamplingSettings(max_tokens=64)
        completions = engine.generate(prompts, [None], sampling)[0]
        questions, texts = [e.question for e in examples], [c[0].text for c in completions]
        tokens = sum(c[0].num_tokens for c in completions)
        scorers = {f"{dtype}, batch {batch}": RewardModelScorer(RewardModelConfig(
            path=str(rm_folder), dtype=dtype, device="cpu", batch_size=batch))
            for dtype, batch in (("float32", 8), ("bfloat16", 8), ("bfloat16", 32))}
        for scorer in scorers.values():
            scorer.score(questions, texts)  # warm-up
        times: dict[str, list[float]] = {"generation": [], **{k: [] for k in scorers}}
        for r in range(args.rounds):
            t0 = time.time()
            engine.generate(prompts, [None], sampling)
            times["generation"].append(time.time() - t0)
            for key, scorer in scorers.items():
                t0 = time.time()
                scorer.score(questions, texts)
                times[key].append(time.time() - t0)
            print(f"round {r} (load {os.getloadavg()[0]:.1f}): "
                  + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()), flush=True)
        engine.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"\n{time.strftime('%Y-%m-%d')}, torch {torch.__version__}, CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}: one candidate = 32 prompts, {tokens} generated tokens\n")
    print("| scoring | seconds per candidate (median) | vs generation (median of per-round ratios) |")
    print("|---|---|---|")
    print(f"| generation (vLLM, bf16 where native) | {statistics.median(times['generation']):.2f} | 1 |")
    for key in scorers:
        ratio = statistics.median(a / g for a, g in zip(times[key], times["generation"]))
        print(f"| reward model {key} | {statistics.median(times[key]):.2f} | {ratio:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
