"""The one record type every task is turned into."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Example:
    """One problem of a task.

    ``answer`` is the gold final answer the reward checks against (``"19"``, ``"\\frac{1}{2}"``);
    ``solution`` is a reference solution text when the dataset has one (SFT targets and the
    log-likelihood fitness use it), else empty.
    """

    id: str
    question: str
    answer: str
    solution: str = ""
