"""Fitness conventions: the one place for the sign rule, the failure rule and fitness shaping.

Sign rule: every strategy in this package *maximizes* fitness (reward up). pycma minimizes a
cost, so the pycma-backed strategies hand it ``to_cost(fitness) = -fitness`` and nothing else
in the package negates anything.

Failure rule: a non-finite fitness (NaN, +inf or -inf) marks a failed candidate (a crashed
worker, an unscorable batch). It is replaced by ``worst finite fitness of the generation -
margin`` with ``margin = 1 + (best - worst)`` over the finite values, so a failed candidate
ranks strictly last and never becomes the best-so-far. If every candidate of a generation
failed, all get the same value ``ALL_FAILED_FITNESS`` (a tie: rank-based updates then carry no
selection information, which is the honest outcome) and ``best_x`` is not updated.
"""

from __future__ import annotations

import numpy as np

ALL_FAILED_FITNESS = 0.0
"""Value every candidate gets when a whole generation failed (only ties matter then)."""


def sanitize_fitness(fitness, popsize: int) -> tuple[np.ndarray, np.ndarray]:
    """Apply the failure rule: ``(fitness (popsize,) float64, failed (popsize,) bool)``;
    ``ValueError`` when the length does not match the population."""
    values = np.asarray(fitness, dtype=np.float64).reshape(-1)
    if values.shape[0] != popsize:
        raise ValueError(f"expected {popsize} fitness values, got {values.shape[0]}")
    failed = ~np.isfinite(values)
    if not failed.any():
        return values.copy(), failed
    if failed.all():
        return np.full(popsize, ALL_FAILED_FITNESS), failed
    finite = values[~failed]
    worst, best = finite.min(), finite.max()
    cleaned = values.copy()
    cleaned[failed] = worst - (1.0 + (best - worst))
    return cleaned, failed


def to_cost(fitness: np.ndarray) -> np.ndarray:
    """Reward (maximized) to pycma cost (minimized)."""
    return -np.asarray(fitness, dtype=np.float64)


def centered_ranks(fitness: np.ndarray) -> np.ndarray:
    """Fitness shaping of OpenAI-ES: ranks mapped linearly onto [-0.5, 0.5], best = +0.5.

    Tied values get the mean of their ranks, so equal fitness gives equal weight.
    """
    values = np.asarray(fitness, dtype=np.float64)
    if values.shape[0] < 2:
        return np.zeros(values.shape[0])
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    first = np.cumsum(counts) - counts  # rank of the first of each group of equal values
    ranks = (first + (counts - 1) / 2)[inverse.reshape(-1)]
    return ranks / (values.shape[0] - 1) - 0.5
