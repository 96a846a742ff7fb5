"""The reward of the synthetic arithmetic demo task: an integer on the last ``#### n`` line."""

from __future__ import annotations

import functools
from collections.abc import Sequence

from essa.rewards.batch import checked_batch, checked_format_reward, checked_prompts
from essa.rewards.gsm8k import score_numeric
from essa.rewards.numeric_answer import parse_gold_number


def score_arithmetic(
    completions: Sequence[str], answers: Sequence[str], prompts: Sequence[str] | None = None,
    *, format_reward: float = 0.0
) -> list[float]:
    """Score completions against integer gold answers (strict ``#### n``, gsm8k number rules).

    A gold answer that is not an integer string ("-12" is fine, "1.5" or "x" are not) can never
    be matched: its items score 0.0 (or the format reward). ``prompts`` are not needed.
    """
    texts, golds = checked_batch(completions, answers)
    checked_prompts(prompts, len(texts))
    scores = []
    for text, gold_text in zip(texts, golds):
        gold = parse_gold_number(gold_text) if "####" not in gold_text else None
        if gold is not None and gold.denominator != 1:
            gold = None
        scores.append(score_numeric(text, gold, "strict", format_reward))
    return scores


def make_arithmetic_reward(*, format_reward: float = 0.0):
    """Build the arithmetic reward; ``format_reward`` as in the gsm8k reward (off by default)."""
    return functools.partial(score_arithmetic, format_reward=checked_format_reward(format_reward))
