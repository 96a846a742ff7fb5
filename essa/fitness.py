"""Candidate fitness: one number per candidate, higher is better, from one engine pass.

Kinds (``fitness.kind``; the kind is written into every record):
- ``accuracy``: mean verifiable reward of greedy generations on the mini-batch (the paper's).
- ``loglik``: mean over prompts of the per-token log-likelihood of the reference solution under
  the candidate (prompt log-probabilities, no generation). Dense: it moves when the model moves
  toward the solution even before an answer flips, which matters at small batch sizes.
- ``hybrid``: ``accuracy + hybrid_weight * loglik``.
The reward is the same function ``essa-eval`` uses: one code path for training and evaluation.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

from essa.data.example import Example
from essa.engines.base import SamplingSettings
from essa.evaluation.evaluate import score_completions


@dataclass
class CandidateFitness:
    """The fitness of one candidate and what it is made of."""

    kind: str
    fitness: float
    accuracy: float | None = None
    loglik: float | None = None
    tokens: int = 0
    seconds: float = 0.0
    item_scores: list[float] | None = None  # the fitness of each prompt; ``fitness`` is their mean

    def as_dict(self) -> dict:
        return asdict(self)


def reference_continuations(examples: Sequence[Example], eos: str = "") -> list[str]:
    """The reference solution of every example (for loglik); a missing one is an error."""
    missing = [e.id for e in examples if not e.solution.strip()]
    if missing:
        raise ValueError(f"fitness.kind loglik/hybrid needs reference solutions; {len(missing)} "
                         f"examples have none (e.g. {missing[0]}): use fitness.kind=accuracy")
    return [e.solution + eos for e in examples]


def score_candidates(engine, candidates: Sequence[Any], examples: Sequence[Example],
                     prompts: Sequence[str], reward: Callable, kind: str,
                     sampling: SamplingSettings, hybrid_weight: float = 0.1) -> list[CandidateFitness]:
    """Fitness of every candidate on the same prompts (common random numbers across candidates)."""
    t0 = time.time()
    n = len(candidates)
    rewards: list[list[float] | None] = [None] * n  # per candidate, per prompt
    logliks: list[list[float] | None] = [None] * n
    tokens = [0] * n
    if kind in ("accuracy", "hybrid"):
        completions = engine.generate(list(prompts), list(candidates), sampling)
        for i, per_prompt in enumerate(completions):
            rewards[i] = [float(s[0]) for s in score_completions(reward, per_prompt, examples)]
            tokens[i] = sum(c[0].num_tokens for c in per_prompt)
    if kind in ("loglik", "hybrid"):
        conts = reference_continuations(examples, _eos(engine))
        per_candidate = engine.score_continuations(list(prompts), conts, list(candidates))
        for i, scores in enumerate(per_candidate):
            logliks[i] = [float(s.mean_logprob) for s in scores]
            tokens[i] += sum(s.num_tokens for s in scores)
    seconds = (time.time() - t0) / max(n, 1)
    out = []
    for i in range(n):
        if kind == "accuracy":
            items = rewards[i]
        elif kind == "loglik":
            items = logliks[i]
        else:
            items = [r + hybrid_weight * ll for r, ll in zip(rewards[i], logliks[i])]
        items = [v if math.isfinite(v) else float("nan") for v in items]
        accuracy = _mean(rewards[i])
        loglik = _mean(logliks[i])
        out.append(CandidateFitness(kind, _mean(items), accuracy, loglik, tokens[i],
                                    round(seconds, 3), items))
    return out


def _mean(values: list[float] | None) -> float | None:
    """Mean of the per-prompt values (NaN if one is NaN); None when there are none."""
    if values is None:
        return None
    return sum(values) / len(values) if values else float("nan")


def _eos(engine) -> str:
    """The end-of-turn text the model should produce after a solution (so stopping is scored too)."""
    tok = getattr(engine, "tokenizer", None)
    return getattr(tok, "eos_token", "") or ""
