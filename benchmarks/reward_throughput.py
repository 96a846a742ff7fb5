"""Throughput of the reward checkers on real benchmark text, one core.

Inputs: every reference solution scored against its own gold answer (right) and against another
problem's answer (wrong), so half the items are correct. Each reward is timed against a trivial
baseline measured in the same run: exact string equality of the stripped final line. The math
reward is timed on one pass with a freshly started worker (its start-up is reported apart, and a
single pass keeps the worker's parse cache from flattering the rate), once as shipped (fast path
first) and once with math-verify alone.

Run (from the repository root):
    python benchmarks/reward_throughput.py            # pinned to CPU 0, prints a markdown table
    python benchmarks/reward_throughput.py --cpu -1   # no pinning
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from essa.rewards import get_reward  # noqa: E402
from essa.rewards.verify_pool import close_shared_pools  # noqa: E402


def read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def half_right(solutions: list[str], golds: list[str]) -> tuple[list[str], list[str]]:
    """Each solution against its own answer, then against the next problem's answer."""
    shifted = golds[1:] + golds[:1]
    return solutions + solutions, golds + shifted


def string_equality(completions: list[str], answers: list[str]) -> list[float]:
    """The trivial baseline: the completion's last line equals the gold answer."""
    return [float(c.strip().rsplit("\n", 1)[-1] == a.strip()) for c, a in zip(completions, answers)]


def items_per_second(reward, completions: list[str], answers: list[str], min_seconds: float) -> tuple[float, float]:
    """(items per second, mean score) over repeated passes lasting at least ``min_seconds``."""
    passes, start = 0, time.perf_counter()
    while True:
        scores = reward(completions, answers)
        passes += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return passes * len(completions) / elapsed, sum(scores) / len(scores)


def cold_math_pass(reward, completions: list[str], answers: list[str]) -> tuple[float, float, float]:
    """(items per second, mean score, worker start-up s) for one pass on a fresh worker.

    One pass only: the worker caches parsed answers, so repeating the same items would time
    the cache, not the checker.
    """
    close_shared_pools()
    start = time.perf_counter()
    reward(["\\boxed{\\frac{1}{2}}"], ["0.4"])  # start the worker (math-verify import, warm-up)
    startup_s = time.perf_counter() - start
    start = time.perf_counter()
    scores = reward(completions, answers)
    return len(completions) / (time.perf_counter() - start), sum(scores) / len(scores), startup_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=os.environ.get("ESSA_DATA_DIR") or str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--cpu", type=int, default=0, help="CPU to pin to (the math-verify worker inherits it); -1: none")
    parser.add_argument("--min-seconds", type=float, default=3.0, help="least timing per measurement")
    args = parser.parse_args()
    if args.cpu >= 0:
        os.sched_setaffinity(0, {args.cpu})
    data = Path(args.data_dir)

    gsm_rows = read_jsonl(data / "gsm8k" / "test.jsonl")
    gsm = half_right([r["answer"] for r in gsm_rows], [r["answer"].rsplit("####", 1)[1].strip() for r in gsm_rows])
    math_rows = read_jsonl(data / "math500" / "test.jsonl")
    math = half_right([r["solution"] for r in math_rows], [r["answer"] for r in math_rows])

    cases = [
        ("gsm8k strict", get_reward("gsm8k"), gsm),
        ("gsm8k flexible", get_reward("gsm8k", mode="flexible"), gsm),
        ("math (fast path, then math-verify)", get_reward("math"), math),
        ("math (math-verify only)", get_reward("math", fast_path=False), math),
    ]
    print(f"date: {datetime.date.today()}  python: {sys.version.split()[0]}  cpu: {args.cpu}  "
          f"load average: {os.getloadavg()[0]:.1f}\n")
    print("| reward | items | mean score | items/s | baseline items/s | reward time / baseline time |")
    print("|---|---|---|---|---|---|")
    startups = []
    for name, reward, (completions, answers) in cases:
        baseline, _ = items_per_second(string_equality, completions, answers, args.min_seconds)
        if name.startswith("math"):
            rate, mean, startup_s = cold_math_pass(reward, completions, answers)
            startups.append(startup_s)
        else:
            rate, mean = items_per_second(reward, completions, answers, args.min_seconds)
        print(f"| {name} | {len(completions)} | {mean:.3f} | {rate:,.0f} | {baseline:,.0f} | {baseline / rate:,.0f}x |")
    print(f"\nmath-verify worker start-up (not in the rates): {', '.join(f'{s:.2f} s' for s in startups)}")


if __name__ == "__main__":
    main()
