"""The one small interface every inference engine implements; the runtime never knows which.

``generate(prompts, candidates)`` answers every prompt under every candidate: ``None`` (the base
model), a PEFT adapter folder (``str`` or ``Path``), or an :class:`essa.adapters.peft_io.LoraCandidate`
(per-module LoRA factors in memory, as ``SvdSpace.candidate(x)`` makes them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence


@dataclass
class Completion:
    """One generated answer: its text and how many tokens it took."""

    text: str
    num_tokens: int


@dataclass
class SamplingSettings:
    """How to decode; greedy unless ``temperature > 0``.

    ``stop_rule``: a rule of :mod:`essa.engines.stop_rules` (``engine.stop_at_answer``): stop a
    completion once its reward is decided and cut its text there; None generates as before.
    """

    max_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    n: int = 1
    seed: int = 0
    stop: list[str] = field(default_factory=list)
    stop_rule: str | None = None


@dataclass
class ContinuationScore:
    """Log-likelihood of a given continuation after a prompt (no generation)."""

    logprob: float
    num_tokens: int

    @property
    def mean_logprob(self) -> float:
        return self.logprob / max(self.num_tokens, 1)


class Engine(Protocol):
    """What the runtime needs of an engine (vLLM, transformers, or a test stand-in)."""

    name: str
    candidates_per_pass: int  # candidates one generate() runs together for about one pass's cost

    def generate(self, prompts: Sequence[str], candidates: Sequence[Any] = (None,),
                 sampling: SamplingSettings | None = None) -> list[list[list[Completion]]]:
        """Completions indexed [candidate][prompt][sample]."""
        ...

    def score_continuations(self, prompts: Sequence[str], continuations: Sequence[str],
                            candidates: Sequence[Any] = (None,)) -> list[list[ContinuationScore]]:
        """Log-likelihood of ``continuations[i]`` after ``prompts[i]``, indexed [candidate][item]."""
        ...

    def describe(self) -> str:
        """One line for logs and the run record: backend, dtype and how it was chosen."""
        ...

    def close(self) -> None:
        """Free the engine's memory and processes."""
        ...
