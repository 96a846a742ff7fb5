"""The one small interface every inference engine implements.

The runtime calls ``generate(prompts, candidates)``: every prompt answered under every candidate.
A candidate is ``None`` (the base model) or an adapter (a PEFT folder, or in-memory LoRA tensors).
The runtime never knows which backend it drives.
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
    """How to decode; greedy unless ``temperature > 0``."""

    max_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    n: int = 1
    seed: int = 0
    stop: list[str] = field(default_factory=list)


class Engine(Protocol):
    """What the runtime needs of an engine (vLLM, transformers, or a test stand-in)."""

    name: str

    def generate(self, prompts: Sequence[str], candidates: Sequence[Any] = (None,),
                 sampling: SamplingSettings | None = None) -> list[list[list[Completion]]]:
        """Completions indexed [candidate][prompt][sample]."""
        ...

    def close(self) -> None:
        """Free the engine's memory and processes."""
        ...
