"""The strategy interface and the bookkeeping every strategy shares.

Subclasses implement ``_ask``, ``_tell`` (which gets fitness already passed through the failure
rule of ``population.fitness``) and optionally ``_stop``; the base class checks the common
arguments, holds the centre ``_mean`` (x0 clipped into the bounds) and step size ``_sigma``
(pycma's wrapper overrides ``mean`` and ``sigma``), the counters and the best-so-far, and checks
the stop conditions ``maxiter`` and ``ftarget``.

Noise-aware options shared by all strategies (docs/population.md, "Mirrored sampling and the
mean's learning rate"): ``mirrored`` (candidates in mirrored pairs, rows ``i`` and
``i + popsize / 2``; needs an even popsize) and ``mean_lr`` (the mean moves that share of the way
to the weighted recombination). Both are class attributes too, so a strategy pickled before they
existed loads with the old behaviour (``False``, ``1.0``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from population.bounds import clip_to_bounds, normalize_bounds
from population.fitness import sanitize_fitness


class Strategy(ABC):
    """Ask/tell evolution strategy over float64 vectors, maximizing fitness.

    Attributes: ``dim``, ``popsize``, ``seed``, ``bounds`` (``None`` or ``(lower, upper)``),
    ``generation`` (completed tells), ``evaluations``, ``best_x`` (``None`` until a
    generation with a finite fitness was told), ``best_fitness`` (``-inf`` until then),
    ``last_failed`` (failed candidates in the last tell).
    """

    name: str = "strategy"
    arrays_replaced_not_mutated = False
    """True where every array attribute is replaced by a new one instead of being changed in
    place: ``population.snapshot`` then freezes the state without copying it."""
    mirrored: bool = False
    """Candidates come as mirrored pairs: row ``i + popsize // 2`` is row ``i`` reflected
    through the mean (before clipping into the bounds)."""
    mean_lr: float = 1.0
    """Learning rate of the mean (c_m of Hansen's tutorial): 1.0 is the plain update."""

    def __init__(self, x0, sigma0: float, popsize: int, seed: int, bounds=None,
                 max_generations: int | None = None, target_fitness: float | None = None,
                 *, mirrored: bool = False, mean_lr: float = 1.0):
        x0 = np.array(x0, dtype=np.float64).reshape(-1)  # a copy: the caller's array stays theirs
        if x0.size == 0 or not np.all(np.isfinite(x0)):
            raise ValueError("x0 must be a non-empty finite vector")
        if not sigma0 > 0:
            raise ValueError("sigma0 must be positive")
        if int(popsize) < 2:
            raise ValueError("popsize must be at least 2")
        if mirrored and int(popsize) % 2:
            raise ValueError(f"mirrored sampling needs an even popsize, got {int(popsize)}")
        mean_lr = float(mean_lr)
        if not 0.0 < mean_lr <= 1.0:
            raise ValueError(f"mean_lr must be in (0, 1], got {mean_lr}")
        self.dim = int(x0.size)
        self.popsize = int(popsize)
        self.seed = int(seed)
        self.bounds = normalize_bounds(bounds, self.dim)
        self._mean = clip_to_bounds(x0, self.bounds)
        self._sigma = float(sigma0)
        self.max_generations = max_generations
        self.target_fitness = target_fitness
        self.generation = 0
        self.evaluations = 0
        self.best_x: np.ndarray | None = None
        self.best_fitness = -np.inf
        self.last_failed = 0
        self.mirrored = bool(mirrored)
        self.mean_lr = mean_lr

    def ask(self) -> np.ndarray:
        """Return the next generation's candidates, shape (popsize, dim), float64."""
        candidates = np.ascontiguousarray(self._ask(), dtype=np.float64)
        assert candidates.shape == (self.popsize, self.dim), candidates.shape
        return candidates

    def tell(self, candidates, fitness) -> None:
        """Update from the candidates of ``ask()`` and their fitness (higher is better; NaN or
        inf marks a failed candidate, see ``population.fitness``)."""
        candidates = np.asarray(candidates, dtype=np.float64)
        if candidates.shape != (self.popsize, self.dim):
            raise ValueError(f"candidates must have shape {(self.popsize, self.dim)}, "
                             f"got {candidates.shape}")
        values, failed = sanitize_fitness(fitness, self.popsize)
        self.last_failed = int(failed.sum())
        self._record_best(candidates, values, failed)
        self._tell(candidates, values)
        self.generation += 1
        self.evaluations += self.popsize

    def prefetch(self) -> None:
        """Between ``ask`` and ``tell``: prepare what the next ``ask`` needs that this tell does
        not change (no candidate changes). A master may run it in a thread while the workers
        evaluate, finishing it before ``tell``. A no-op where there is nothing to prepare."""

    def stop(self) -> dict:
        """Triggered stop conditions as ``{name: value}``; empty while the search goes on."""
        triggered = dict(self._stop())
        if self.max_generations is not None and self.generation >= self.max_generations:
            triggered["maxiter"] = self.max_generations
        if self.target_fitness is not None and self.best_fitness >= self.target_fitness:
            triggered["ftarget"] = self.target_fitness
        return triggered

    @property
    def result(self) -> dict:
        """Summary: best_x, best_fitness, mean, sigma, generation, evaluations."""
        return {"best_x": None if self.best_x is None else self.best_x.copy(),
                "best_fitness": self.best_fitness, "mean": self.mean.copy(),
                "sigma": self.sigma, "generation": self.generation,
                "evaluations": self.evaluations}

    @property
    def mean(self) -> np.ndarray:
        """Current centre of the search distribution, shape (dim,) (a copy)."""
        return self._mean.copy()

    @property
    def sigma(self) -> float:
        """Current overall step size."""
        return self._sigma

    @abstractmethod
    def _ask(self) -> np.ndarray:
        """Sample (popsize, dim) candidates."""

    @abstractmethod
    def _tell(self, candidates: np.ndarray, fitness: np.ndarray) -> None:
        """Update the distribution; ``fitness`` is finite, higher is better."""

    def _stop(self) -> dict:
        """Strategy-specific stop conditions."""
        return {}

    def _normals(self, rng: np.random.Generator, dtype=np.float64) -> np.ndarray:
        """(popsize, dim) standard normals from ``rng``: all independent, or, when
        ``mirrored``, popsize / 2 drawn and stacked with their negatives (rows i and i + half)."""
        if not self.mirrored:
            return rng.standard_normal((self.popsize, self.dim), dtype=dtype)
        half = rng.standard_normal((self.popsize // 2, self.dim), dtype=dtype)
        return np.concatenate([half, -half])

    def _apply_mean_lr(self, old_mean: np.ndarray, old_sigma: float,
                       y_mean: np.ndarray) -> None:
        """For the own CMA-ES after ``cma_params.advance`` (which moves the mean the whole way,
        c_m = 1): with ``mean_lr`` < 1 put the mean at m + c_m sigma y_w instead (clipped). The
        paths need no change: the tutorial's (m_new - m_old) / (c_m sigma) is y_w either way."""
        if self.mean_lr != 1.0:
            self._mean = clip_to_bounds(old_mean + (self.mean_lr * old_sigma) * y_mean,
                                        self.bounds)

    def _record_best(self, candidates: np.ndarray, fitness: np.ndarray,
                     failed: np.ndarray) -> None:
        if failed.all():
            return
        i = int(np.argmax(np.where(failed, -np.inf, fitness)))
        if fitness[i] > self.best_fitness:
            self.best_fitness = float(fitness[i])
            self.best_x = candidates[i].copy()
