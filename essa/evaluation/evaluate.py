"""Score a model (or a candidate adapter) on a list of examples: generate, then reward.

The same reward function scores training fitness and evaluation: one code path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from essa.data.example import Example
from essa.engines.base import Completion, SamplingSettings


@dataclass
class EvalResult:
    """Per-item scores (one list of sample scores per item) and their summary."""

    scores: list[list[float]]
    completions: list[list[Completion]]
    examples: list[Example] = field(repr=False)

    @property
    def accuracy(self) -> float:
        """Mean over items of the first sample's score (greedy accuracy when decoding greedily)."""
        return sum(s[0] for s in self.scores) / max(len(self.scores), 1)

    @property
    def tokens(self) -> int:
        return sum(c.num_tokens for cs in self.completions for c in cs)


def score_completions(reward: Callable, completions: list[list[Completion]],
                      examples: Sequence[Example]) -> list[list[float]]:
    """Reward every sample of every item, in one batched reward call (the reward sees each
    item's question text, not the chat-templated prompt)."""
    texts = [c.text for cs in completions for c in cs]
    golds = [e.answer for e, cs in zip(examples, completions) for _ in cs]
    questions = [e.question for e, cs in zip(examples, completions) for _ in cs]
    flat = reward(texts, golds, prompts=questions)
    out, pos = [], 0
    for cs in completions:
        out.append([float(x) for x in flat[pos:pos + len(cs)]])
        pos += len(cs)
    return out


def evaluate(engine, prompts: Sequence[str], examples: Sequence[Example], reward: Callable,
             sampling: SamplingSettings, candidate: Any = None) -> EvalResult:
    """Generate under ``candidate`` (None: the base model) and score against the gold answers."""
    completions = engine.generate(list(prompts), [candidate], sampling)[0]
    scores = score_completions(reward, completions, examples)
    return EvalResult(scores=scores, completions=completions, examples=list(examples))
