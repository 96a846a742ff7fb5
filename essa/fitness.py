"""Candidate fitness: one number per candidate, higher is better, from one engine pass.

Kinds (``fitness.kind``):
- ``accuracy``: mean verifiable reward of greedy generations on the mini-batch (the paper's).
- ``loglik``: mean over prompts of the per-token log-likelihood of the reference solution under
  the candidate (prompt log-probabilities, no generation). Dense: it moves when the model moves
  toward the solution even before an answer flips, which matters at small batch sizes.
- ``hybrid``: ``accuracy + hybrid_weight * loglik``.
- ``reward_model``: mean score of a reward model (``essa.reward_model``) on the generations,
  each pair being the item's question and the completion; optionally minus the base model's
  score on the same question (``fitness.reward_model.baseline``).
The reward is the same function ``essa-eval`` uses: one code path for training and evaluation.

:class:`Score` is the one score type from the reward to ``strategy.tell``: the engine pass makes
it, the worker sends it in a ``Result``, the master joins a candidate's slices into one, the loop
hands ``fitness_vector(scores)`` to the strategy. A non-finite fitness marks a failed candidate;
what that means is decided in one place, ``population.sanitize_fitness``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from essa.data.example import Example
from essa.engines.base import SamplingSettings
from essa.evaluation.evaluate import score_completions


@dataclass
class Score:
    """The fitness of one candidate on some items, and what it is made of.

    Kept per item so that a candidate cut into slices and scored on several workers gets, once
    its slices are joined in item order, the same floats as when scored whole.
    """

    items: np.ndarray  # (n,) float64 fitness of each item; the candidate's fitness is their mean
    rewards: np.ndarray | None = None  # (n,) reward of each item (accuracy, hybrid, reward_model: raw)
    logliks: np.ndarray | None = None  # (n,) reference log-likelihood of each item (loglik, hybrid)
    tokens: int = 0
    seconds: float = 0.0  # time spent scoring it (its share of the engine pass)

    def __post_init__(self):
        self.items = np.asarray(self.items, dtype=np.float64).reshape(-1)

    @property
    def fitness(self) -> float:
        """Mean over the items: NaN when one is NaN or there are none (a failed candidate)."""
        return float(self.items.mean()) if self.items.size else float("nan")

    @property
    def accuracy(self) -> float | None:
        return _mean(self.rewards)

    @property
    def loglik(self) -> float | None:
        return _mean(self.logliks)

    @classmethod
    def join(cls, parts: Sequence[Score]) -> Score:
        """One score from the scores of consecutive item slices, given in item order."""
        def cat(name):
            values = [getattr(p, name) for p in parts]
            return None if any(v is None for v in values) else np.concatenate(values)
        return cls(np.concatenate([p.items for p in parts]), cat("rewards"), cat("logliks"),
                   sum(p.tokens for p in parts), sum(p.seconds for p in parts))


def fitness_vector(scores: Sequence[Score]) -> np.ndarray:
    """(n,) float64 fitness of each candidate, as ``strategy.tell`` takes it."""
    return np.array([s.fitness for s in scores], dtype=np.float64)


def reference_continuations(examples: Sequence[Example], eos: str = "") -> list[str]:
    """The reference solution of every example (for loglik); a missing one is an error."""
    missing = [e.id for e in examples if not e.solution.strip()]
    if missing:
        raise ValueError(f"fitness.kind loglik/hybrid needs reference solutions; {len(missing)} "
                         f"examples have none (e.g. {missing[0]}): use fitness.kind=accuracy")
    return [e.solution + eos for e in examples]


def score_candidates(engine, candidates: Sequence[Any], examples: Sequence[Example],
                     prompts: Sequence[str], reward: Callable, kind: str,
                     sampling: SamplingSettings, hybrid_weight: float = 0.1,
                     reward_model=None, baseline: dict | None = None) -> list[Score]:
    """Fitness of every candidate on the same prompts (common random numbers across candidates).

    Kind ``reward_model`` needs ``reward_model`` (an ``essa.reward_model.scorer.RewardModelScorer``);
    ``baseline``, when given, turns the baseline on: a dict item id -> the base model's reward,
    filled here and reused while decoding is greedy (the same base completion every time).
    """
    t0 = time.time()
    n = len(candidates)
    rewards: list[np.ndarray | None] = [None] * n  # per candidate, per prompt
    logliks: list[np.ndarray | None] = [None] * n
    tokens = [0] * n
    if kind == "reward_model":
        rewards, base, tokens = _reward_model_pass(engine, candidates, examples, prompts, sampling,
                                                   reward_model, baseline)
    if kind in ("accuracy", "hybrid"):
        _check_answers(examples, kind)
        completions = engine.generate(list(prompts), list(candidates), sampling)
        for i, per_prompt in enumerate(completions):
            rewards[i] = np.array([s[0] for s in score_completions(reward, per_prompt, examples)], float)
            tokens[i] = sum(c[0].num_tokens for c in per_prompt)
    if kind in ("loglik", "hybrid"):
        conts = reference_continuations(examples, _eos(engine))
        per_candidate = engine.score_continuations(list(prompts), conts, list(candidates))
        for i, scores in enumerate(per_candidate):
            logliks[i] = np.array([s.mean_logprob for s in scores], float)
            tokens[i] += sum(s.num_tokens for s in scores)
    seconds = round((time.time() - t0) / max(n, 1), 3)
    items = {"accuracy": lambda i: rewards[i], "loglik": lambda i: logliks[i],
             "hybrid": lambda i: rewards[i] + hybrid_weight * logliks[i],
             "reward_model": lambda i: rewards[i] - base}[kind]
    return [Score(items(i), rewards[i], logliks[i], tokens[i], seconds) for i in range(n)]


def _reward_model_pass(engine, candidates, examples, prompts, sampling, reward_model, baseline):
    """Generate and score with the reward model: (rewards per candidate (b,), the baseline to
    subtract (b,) or 0.0, tokens per candidate). The base model's completions join the same
    engine pass when some item's base reward is not known yet."""
    if reward_model is None:
        raise ValueError("fitness.kind reward_model needs a reward model scorer (fitness.reward_model)")
    ids, questions = [e.id for e in examples], [e.question for e in examples]
    greedy = sampling.temperature == 0
    with_base = baseline is not None and not (greedy and all(i in baseline for i in ids))
    completions = engine.generate(list(prompts), list(candidates) + ([None] if with_base else []),
                                  sampling)
    rewards = [reward_model.score(questions, [c[0].text for c in per_prompt])
               for per_prompt in completions]
    tokens = [sum(c[0].num_tokens for c in per_prompt) for per_prompt in completions]
    if with_base:  # the base model's row, appended last
        base_rewards = rewards.pop()
        tokens[0] += tokens.pop()  # counted once, with the pass's first candidate
        if not greedy:
            return rewards, base_rewards, tokens
        baseline.update(zip(ids, base_rewards.tolist()))
    base = np.array([baseline[i] for i in ids], float) if baseline is not None else 0.0
    return rewards, base, tokens


def _check_answers(examples: Sequence[Example], kind: str) -> None:
    """A verifiable reward needs gold answers: prompt-only data (all answers empty) is refused."""
    if examples and not any(e.answer.strip() for e in examples):
        raise ValueError(f"fitness.kind {kind} needs gold answers; the items have none (e.g. "
                         f"{examples[0].id}): set task.answer_field, or use fitness.kind reward_model")


def _mean(values: np.ndarray | None) -> float | None:
    """Mean of per-item values (NaN if one is NaN or there are none); None when not measured."""
    if values is None:
        return None
    return float(values.mean()) if values.size else float("nan")


def _eos(engine) -> str:
    """The end-of-turn text the model should produce after a solution (so stopping is scored too)."""
    tok = getattr(engine, "tokenizer", None)
    return getattr(tok, "eos_token", "") or ""
