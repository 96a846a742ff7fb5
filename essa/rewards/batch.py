"""Checks every reward applies to its inputs before scoring.

A reward never raises on completion text: a completion that is not a string (``None`` from a
failed generation) is scored as the empty string. Gold answers may arrive as numbers (amc23
stores ``27.0``); they are turned into text. Mismatched list lengths are a caller's bug and do
raise.
Prompts, when a caller passes them, are the question texts (not the chat-templated strings).
"""

from __future__ import annotations

from collections.abc import Sequence


def checked_batch(completions: Sequence[object], answers: Sequence[object]) -> tuple[list[str], list[str]]:
    """Return (completions, answers) as lists of strings of equal length."""
    if isinstance(completions, str) or isinstance(answers, str):
        raise TypeError("a reward takes lists of completions and answers, not single strings")
    if len(completions) != len(answers):
        raise ValueError(f"{len(completions)} completions but {len(answers)} gold answers")
    texts = [c if isinstance(c, str) else "" for c in completions]
    golds = [_gold_text(a) for a in answers]
    return texts, golds


def checked_prompts(prompts: Sequence[object] | None, n: int) -> list[str] | None:
    """The question texts a reward may see, one per completion (None: not given)."""
    if prompts is None:
        return None
    if isinstance(prompts, str):
        raise TypeError("a reward takes a list of prompts, not a single string")
    if len(prompts) != n:
        raise ValueError(f"{n} completions but {len(prompts)} prompts")
    return [p if isinstance(p, str) else "" for p in prompts]


def _gold_text(answer: object) -> str:
    """A gold answer as text: numbers are formatted, anything else unusable becomes empty."""
    if isinstance(answer, str):
        return answer
    if isinstance(answer, (int, float)) and not isinstance(answer, bool):
        return repr(answer)
    return ""


def checked_format_reward(value: float) -> float:
    """The partial score for a well-formed but wrong answer: must lie in [0, 1)."""
    value = float(value)
    if not 0.0 <= value < 1.0:
        raise ValueError(f"format_reward must lie in [0, 1), got {value}")
    return value
