"""The MATH reward: the last ``\\boxed{}`` of a completion, checked against the gold answer.

Order of work per item: extract the box (linear scan), try the fast path (normalised string
match, or two different integers), and only then ask math-verify, in a worker process under a
hard deadline (see :mod:`essa.rewards.verify_pool`). An item that times out scores 0.0.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass

from essa.rewards.batch import checked_batch, checked_prompts, checked_format_reward
from essa.rewards.boxed import last_boxed
from essa.rewards.fast_path import fast_verdict
from essa.rewards.verify_pool import shared_pool


@dataclass(frozen=True)
class MathOptions:
    """Knobs of the math reward (see :func:`make_math_reward`)."""

    timeout_s: float = 5.0
    workers: int = 1
    fallback_unboxed: bool = False
    format_reward: float = 0.0
    max_answer_chars: int = 1000
    fallback_tail_chars: int = 2000
    memory_limit_mb: int = 4096
    fast_path: bool = True


def _gold_answer(gold: str) -> str:
    """The gold answer itself: a bare answer, or the last box of a full solution."""
    boxed = last_boxed(gold)
    return (boxed if boxed is not None else gold).strip()


def _prediction(completion: str, options: MathOptions) -> tuple[str, bool] | None:
    """(text for math-verify, is it a whole completion) or None when there is nothing to check."""
    boxed = last_boxed(completion)
    if boxed is not None:
        boxed = boxed.strip()
        # An answer longer than any real one is junk, and feeding it to sympy only costs time.
        return (boxed, False) if 0 < len(boxed) <= options.max_answer_chars else None
    if options.fallback_unboxed and completion.strip():
        # math-verify's own extraction looks for the final answer near the end.
        return completion[-options.fallback_tail_chars :], True
    return None


def score_math(
    completions: Sequence[str], answers: Sequence[str], prompts: Sequence[str] | None = None,
    *, options: MathOptions = MathOptions()
) -> list[float]:
    """Score completions against MATH-style gold answers (1.0 right, 0.0 wrong or unscorable;
    ``options.format_reward`` for a boxed but wrong answer). ``prompts`` are not needed."""
    texts, golds = checked_batch(completions, answers)
    checked_prompts(prompts, len(texts))
    scores = [0.0] * len(texts)
    boxed_found = [False] * len(texts)
    jobs, job_items = [], []
    for index, (text, gold_text) in enumerate(zip(texts, golds)):
        gold, prediction = _gold_answer(gold_text), _prediction(text, options)
        if prediction is None or not gold:
            continue
        predicted, raw = prediction
        boxed_found[index] = not raw
        verdict = fast_verdict(gold, predicted) if options.fast_path and not raw else None
        if verdict is None:
            jobs.append({"gold": gold, "pred": predicted, "raw": raw})
            job_items.append(index)
        elif verdict:
            scores[index] = 1.0
    if jobs:
        pool = shared_pool(options.workers, options.memory_limit_mb)
        for index, verdict in zip(job_items, pool.judge(jobs, options.timeout_s)):
            scores[index] = 1.0 if verdict else 0.0
    if options.format_reward:
        scores = [options.format_reward if boxed and s < 1.0 else s for s, boxed in zip(scores, boxed_found)]
    return scores


def make_math_reward(
    *,
    timeout_s: float = 5.0,
    workers: int = 1,
    fallback_unboxed: bool = False,
    format_reward: float = 0.0,
    max_answer_chars: int = 1000,
    memory_limit_mb: int = 4096,
    fast_path: bool = True,
):
    """Build the math reward.

    Args:
        timeout_s: hard wall-clock limit per item for math-verify; past it the item scores 0.0.
        workers: math-verify worker processes (one core each; one is enough for most batches).
        fallback_unboxed: if True, a completion without a box is handed whole (its last 2,000
            characters) to math-verify's own answer extraction; by default it scores 0.0, since
            the prompt asks for a box.
        format_reward: partial score in [0, 1) for a boxed but wrong answer; 0.0 (off) by default.
        max_answer_chars: a box longer than this scores 0.0 without being parsed.
        memory_limit_mb: address-space cap of each worker (0 = none), so a runaway expansion
            fails fast instead of eating the machine's memory within the deadline.
        fast_path: decide exact (normalised) matches and different integers without
            math-verify; turn off only to measure or test math-verify itself.
    """
    if importlib.util.find_spec("math_verify") is None:
        raise ImportError("the math reward needs math-verify: pip install 'math-verify[antlr4_13_2]'")
    if timeout_s <= 0:
        raise ValueError(f"math timeout_s must be positive, got {timeout_s}")
    if workers < 1:
        raise ValueError(f"math workers must be >= 1, got {workers}")
    options = MathOptions(
        timeout_s=float(timeout_s),
        workers=int(workers),
        fallback_unboxed=bool(fallback_unboxed),
        format_reward=checked_format_reward(format_reward),
        max_answer_chars=int(max_answer_chars),
        memory_limit_mb=int(memory_limit_mb),
        fast_path=bool(fast_path),
    )
    return functools.partial(score_math, options=options)
