"""Split a fixed per-generation budget of candidate-prompt evaluations into a population size
and a mini-batch size (prompts per candidate).

The rule is measured, not derived: benchmarks/noisy_search.py, the popsize / prompts trade-off
at 384 evaluations per generation (benchmarks/RESULTS.md, "Noisy search benchmark (#21)").
"""

from __future__ import annotations

import math

MIN_POPSIZE = 4
"""Never fewer candidates than this (CMA-ES's weights need a few; two mirrored pairs)."""
POPSIZE_FACTOR = 2.0
"""popsize = POPSIZE_FACTOR * evaluations ** (1/3), rounded (to an even number when mirrored)."""


def split_budget(evaluations: int, mirrored: bool) -> tuple[int, int]:
    """``(popsize, evaluations per candidate)`` for ``evaluations`` candidate-prompt
    evaluations per generation.

    Measured rule (benchmarks/noisy_search.py, trade-offs at 96, 384 and 1,536 evaluations per
    generation): few candidates on many prompts lose badly (the mean's random walk shrinks with
    the number of selected candidates), many candidates on few prompts lose slowly, and the best
    popsize grows slowly with the budget, inside a broad plateau that 2 * evaluations ** (1/3)
    hits at every budget measured: 96 -> 10 x 9 (mirrored), 384 -> 14 x 27, 1,536 -> 24 x 64.
    popsize is at least ``MIN_POPSIZE`` and even when ``mirrored``; per candidate is
    ``evaluations // popsize`` (at least 1), so the split never overspends a budget of at least
    ``MIN_POPSIZE`` and one more prompt per candidate would.
    """
    evaluations = int(evaluations)
    if evaluations < 1:
        raise ValueError(f"evaluations must be positive, got {evaluations}")
    target = POPSIZE_FACTOR * evaluations ** (1 / 3)
    popsize = 2 * round(target / 2) if mirrored else round(target)
    popsize = max(MIN_POPSIZE, int(popsize))
    return popsize, max(1, evaluations // popsize)
