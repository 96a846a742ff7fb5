"""The GSM8K reward: the number on the ``#### n`` line (strict) or the last number (flexible)."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from fractions import Fraction
from typing import Literal

from essa.rewards.batch import checked_batch, checked_format_reward, checked_prompts
from essa.rewards.numeric_answer import flexible_answer, parse_gold_number, strict_answer

Mode = Literal["strict", "flexible"]


def score_numeric(
    completion: str, gold: Fraction | None, mode: Mode = "strict", format_reward: float = 0.0
) -> float:
    """Score one completion against a parsed gold number.

    1.0 if the extracted number equals ``gold``; ``format_reward`` if the completion has a
    ``#### <number>`` line but the number is wrong; else 0.0.
    """
    marked = strict_answer(completion)
    predicted = marked if mode == "strict" else flexible_answer(completion)
    if gold is not None and predicted is not None and predicted == gold:
        return 1.0
    return format_reward if marked is not None else 0.0


def score_gsm8k(
    completions: Sequence[str],
    answers: Sequence[str],
    prompts: Sequence[str] | None = None,
    *,
    mode: Mode = "strict",
    format_reward: float = 0.0,
) -> list[float]:
    """Score completions against GSM8K gold answers (bare numbers or full ``#### n`` texts);
    ``prompts`` are not needed."""
    texts, golds = checked_batch(completions, answers)
    checked_prompts(prompts, len(texts))
    return [
        score_numeric(text, parse_gold_number(gold), mode, format_reward)
        for text, gold in zip(texts, golds)
    ]


def make_gsm8k_reward(*, mode: Mode = "strict", format_reward: float = 0.0):
    """Build the gsm8k reward.

    Args:
        mode: "strict" (default; the prompt asks for ``#### n`` and only the last such line
            counts) or "flexible" (the last number anywhere in the completion).
        format_reward: partial score in [0, 1) for a wrong answer given on a ``#### n`` line;
            0.0 (off) by default.
    """
    if mode not in ("strict", "flexible"):
        raise ValueError(f"gsm8k mode must be 'strict' or 'flexible', got {mode!r}")
    # A partial of a module-level function pickles, so a reward can be shipped to other ranks.
    return functools.partial(
        score_gsm8k, mode=mode, format_reward=checked_format_reward(format_reward)
    )
