"""Every reference solution of the real benchmarks scores 1.0 against its own gold answer, and
0.0 against another problem's different answer. Run with -s to see the agreement rates."""

import json
import os
import random
from pathlib import Path

import pytest

from essa.rewards import get_reward, last_boxed

DATA_DIR = Path(os.environ.get("ESSA_DATA_DIR") or Path(__file__).resolve().parents[1].parent / "shared" / "data")


def read_jsonl(relative: str) -> list[dict]:
    with open(DATA_DIR / relative, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def shifted_pairs(solutions: list[str], golds: list[str]) -> tuple[list[str], list[str]]:
    """Pair each gold answer with the solution of another problem whose answer differs."""
    order = list(range(len(golds)))
    random.Random(0).shuffle(order)
    completions, answers = [], []
    for position, item in enumerate(order):
        other = order[(position + 1) % len(order)]
        if golds[other].strip() != golds[item].strip():
            completions.append(solutions[other])
            answers.append(golds[item])
    return completions, answers


def report(name: str, scores: list[float]) -> float:
    rate = sum(scores) / len(scores)
    print(f"\n{name}: {rate:.4f} ({int(sum(scores))}/{len(scores)})")
    return rate


@pytest.fixture(scope="module")
def math500():
    rows = read_jsonl("math500/test.jsonl")
    return [row["solution"] for row in rows], [row["answer"] for row in rows]


@pytest.fixture(scope="module")
def gsm8k():
    rows = read_jsonl("gsm8k/test.jsonl")
    return [row["answer"] for row in rows], [row["answer"].rsplit("####", 1)[1].strip() for row in rows]


def test_math500_solutions_agree_with_their_answers(math500):
    solutions, golds = math500
    assert all(last_boxed(s) is not None for s in solutions)
    rate = report("math500 self-agreement", get_reward("math")(solutions, golds))
    assert rate >= 0.99


def test_math500_agreement_holds_through_math_verify_alone(math500):
    solutions, golds = math500
    reward = get_reward("math", fast_path=False)
    rate = report("math500 self-agreement, math-verify only", reward(solutions, golds))
    assert rate >= 0.99


def test_math500_other_solutions_score_zero(math500):
    completions, answers = shifted_pairs(*math500)
    assert len(completions) > 450
    rate = report("math500 cross-agreement (should be 0)", get_reward("math")(completions, answers))
    assert rate == 0.0


@pytest.mark.parametrize("mode", ["strict", "flexible"])
def test_gsm8k_solutions_agree_with_their_answers(gsm8k, mode):
    solutions, golds = gsm8k
    rate = report(f"gsm8k {mode} self-agreement", get_reward("gsm8k", mode=mode)(solutions, golds))
    assert rate == 1.0


def test_gsm8k_full_answer_text_works_as_gold(gsm8k):
    solutions, _ = gsm8k
    assert get_reward("gsm8k")(solutions, solutions) == [1.0] * len(solutions)


@pytest.mark.parametrize("mode", ["strict", "flexible"])
def test_gsm8k_other_solutions_score_zero(gsm8k, mode):
    completions, answers = shifted_pairs(*gsm8k)
    assert len(completions) > 1200
    rate = report(f"gsm8k {mode} cross-agreement (should be 0)", get_reward("gsm8k", mode=mode)(completions, answers))
    assert rate == 0.0
