"""CMA-ES through pycma: full covariance (the paper's method) or diagonal (sep-CMA-ES).

Randomness: pycma is given ``randn`` bound to a private ``RandomState(seed)``. That stream is
exactly the one plain pycma draws after ``np.random.seed(seed)``, so this wrapper proposes the
same candidates as ``cma.CMAEvolutionStrategy(x0, sigma0, {'seed': seed, ...})`` (checked by
the tests), yet it neither reads nor reseeds numpy's global generator. As a safety net every
pycma call also runs with the global state swapped for a second private state, so any other
draw pycma might make depends only on the strategy's seed and leaves the caller's state alone.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import cma

from population.base import Strategy
from population.fitness import to_cost

class PrivateNormal:
    """Picklable ``randn(*shape)`` drawing from its own ``RandomState``."""

    def __init__(self, seed: int):
        self.state = np.random.RandomState(seed)

    def __call__(self, *shape):
        return self.state.randn(*shape)


def pycma_seed(seed: int) -> int:
    """The seed pycma sees for ``seed``: pycma reads 0 as "seed from the clock", so 0 becomes
    2**31 - 1."""
    return int(seed) if int(seed) > 0 else 2**31 - 1


@contextmanager
def private_global_random_state(private: np.random.RandomState):
    """Run the body with ``np.random``'s global state replaced by ``private``'s, storing the
    state it leaves back into ``private`` and restoring the caller's, even if the body raised."""
    outer = np.random.get_state()
    np.random.set_state(private.get_state())
    try:
        yield
    finally:
        private.set_state(np.random.get_state())
        np.random.set_state(outer)


class PycmaCMAES(Strategy):
    """pycma's CMA-ES behind the ``Strategy`` interface.

    ``diagonal=True`` selects sep-CMA-ES (pycma option ``CMA_diagonal``). ``bounds`` uses pycma's
    own boundary handling (``BoundTransform``). ``pycma_options`` are passed through unchanged
    (for example ``tolfun``, ``CMA_active``); verbosity and log files are off by default.

    ``mirrored`` uses pycma's unconditional mirrored sampling (``CMA_mirrors = popsize // 2``,
    ``CMA_mirrormethod = 0``): pycma samples in its genotype space and mirrors there, so with
    bounds the BoundTransform'd phenotypes are mirrors only where no bound is near. ``tell``
    is exact all the same: pycma looks every told solution's genotype up in its archive of
    asked solutions, so y = (geno - mean) / sigma is the sampled step. ``mean_lr`` is pycma's
    ``CMA_cmean`` (its paths divide the mean shift by it, as the tutorial does).
    """

    def __init__(self, x0, sigma0: float, popsize: int, seed: int, bounds=None,
                 diagonal: bool = False, max_generations: int | None = None,
                 target_fitness: float | None = None, mirrored: bool = False,
                 mean_lr: float = 1.0, **pycma_options):
        super().__init__(x0, sigma0, popsize, seed, bounds, max_generations, target_fitness,
                         mirrored=mirrored, mean_lr=mean_lr)
        for key in ("CMA_mirrors", "CMA_mirrormethod", "CMA_cmean"):
            if key in pycma_options and (mirrored or mean_lr != 1.0):
                raise ValueError(f"pass mirrored / mean_lr or the pycma option {key}, not both")
        self.name = "sep-cmaes" if diagonal else "cmaes"
        self.diagonal = bool(diagonal)
        self._randn = PrivateNormal(pycma_seed(seed))
        self._global_state = np.random.RandomState(pycma_seed(seed))
        opts = {"popsize": self.popsize, "seed": np.nan, "randn": self._randn,
                "CMA_diagonal": self.diagonal, "verbose": -9, "verb_log": 0, "verb_disp": 0,
                "tolflatfitness": np.inf}
        if self.bounds is not None:
            opts["bounds"] = [list(self.bounds[0]), list(self.bounds[1])]
        if self.mirrored:  # unconditional mirrors: pycma's rows 2k + 1 = -rows 2k (genotype)
            opts.update(CMA_mirrors=self.popsize // 2, CMA_mirrormethod=0)
        if self.mean_lr != 1.0:
            opts["CMA_cmean"] = self.mean_lr
        opts.update(pycma_options)
        with private_global_random_state(self._global_state):
            self.es = cma.CMAEvolutionStrategy(np.asarray(x0, dtype=np.float64).reshape(-1),
                                               self._sigma, opts)

    @property
    def mean(self) -> np.ndarray:  # pycma's own, not the base class's copy of x0
        return np.array(self.es.mean, dtype=np.float64)

    @property
    def sigma(self) -> float:
        return float(self.es.sigma)

    def _ask(self) -> np.ndarray:
        with private_global_random_state(self._global_state):
            X = np.asarray(self.es.ask(), dtype=np.float64)
        return X[self._mirror_order()] if self.mirrored else X

    def _tell(self, candidates: np.ndarray, fitness: np.ndarray) -> None:
        cost = to_cost(fitness)
        if self.mirrored:  # back into the order pycma asked them in
            inverse = np.argsort(self._mirror_order())
            candidates, cost = candidates[inverse], cost[inverse]
        with private_global_random_state(self._global_state):
            self.es.tell(list(candidates), list(cost))

    def _mirror_order(self) -> np.ndarray:
        """pycma's unconditional mirrors are adjacent (rows 2k, 2k + 1); this order puts them
        at rows k and k + popsize / 2, the layout every strategy here uses."""
        return np.concatenate([np.arange(0, self.popsize, 2), np.arange(1, self.popsize, 2)])

    def _stop(self) -> dict:
        with private_global_random_state(self._global_state):
            triggered = dict(self.es.stop())
        # pycma's ftarget acts on costs: the base class owns that name, with reward semantics.
        triggered.pop("ftarget", None)
        return triggered
