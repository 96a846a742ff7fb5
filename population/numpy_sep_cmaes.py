"""Own numpy sep-CMA-ES (diagonal covariance), linear time and memory in the dimension.

The same update as pycma's ``CMA_diagonal=True`` (active CMA, CSA step size, pycma's separable
learning rates), written for large dimensions: the normals are drawn in float32 (half the time;
their precision is irrelevant to the search), and ``tell`` reuses those of the last ``ask`` when
the candidates come back unchanged instead of dividing the population by the scales again.
"""

from __future__ import annotations

import numpy as np

from population import cma_params as cp
from population.base import Strategy
from population.bounds import clip_to_bounds


class NumpySepCMAES(Strategy):
    """Diagonal CMA-ES in numpy (own implementation, tested against pycma's sep-CMA-ES).

    ``mirrored`` and ``mean_lr``: see ``Strategy``. ``isotropic=True`` switches the covariance
    learning off (c1 = cmu = 0, C stays I): an isotropic ES with CSA step-size adaptation, a
    baseline for the covariance's worth (benchmarks/noisy_search.py).
    """

    name = "sep-cmaes-numpy"
    isotropic = False  # class default: checkpoints from before the option load unchanged

    def __init__(self, x0, sigma0: float, popsize: int, seed: int, bounds=None,
                 max_generations: int | None = None, target_fitness: float | None = None,
                 tolx: float = 1e-11, tolfun: float | None = None, mirrored: bool = False,
                 mean_lr: float = 1.0, isotropic: bool = False):
        super().__init__(x0, sigma0, popsize, seed, bounds, max_generations, target_fitness,
                         mirrored=mirrored, mean_lr=mean_lr)
        self.isotropic = bool(isotropic)
        self.params = cp.make_params(self.dim, self.popsize, separable=True)
        self.diag_c = np.ones(self.dim)  # diagonal of C
        self.p_sigma = np.zeros(self.dim)
        self.p_c = np.zeros(self.dim)
        self.rng = np.random.Generator(np.random.PCG64(self.seed))
        # tolfun is off by default: a noisy reward is often flat within a generation.
        self.tolx, self.tolfun = float(tolx), tolfun
        self._last_z: np.ndarray | None = None  # (popsize, d) float32 normals of the last ask
        self._last_x: np.ndarray | None = None  # (popsize, d) candidates of the last ask
        self._last_fitness_range = np.inf

    def _ask(self) -> np.ndarray:
        z = self._normals(self.rng, np.float32)  # (lam, d); mirrored: rows i, i + lam/2
        scale = (self._sigma * np.sqrt(self.diag_c)).astype(np.float32)
        x = self._mean + z * scale  # float32 product, float64 sum
        self._last_z, self._last_x = z, clip_to_bounds(x, self.bounds)
        return self._last_x

    def _tell(self, candidates: np.ndarray, fitness: np.ndarray) -> None:
        p, diag_c = self.params, self.diag_c
        if self._last_x is not None and np.array_equal(candidates, self._last_x):
            z = self._last_z  # z_i = C^{-1/2} (x_i - m) / sigma, as drawn by the last ask
        else:
            z = (candidates - self._mean) / (self._sigma * np.sqrt(diag_c))
        z = z[np.argsort(-fitness, kind="stable")]  # (lam, d), best first
        z_mean = p.weights[:p.mu] @ z[:p.mu]  # (d,) float64
        old_mean, old_sigma, y_mean = self._mean, self._sigma, np.sqrt(diag_c) * z_mean
        h_sigma = cp.advance(self, z_mean, y_mean)
        self._apply_mean_lr(old_mean, old_sigma, y_mean)
        if not self.isotropic:  # isotropic: C stays I (c1 = cmu = 0), CSA step size only
            # eq. (47) restricted to the diagonal: y_i^2 = diag(C) * z_i^2
            z_sq = np.square(z, dtype=np.float64)  # (lam, d)
            decay, w = cp.cov_update_terms(z_sq.sum(axis=1), h_sigma, p)
            self.diag_c = decay * diag_c + p.c1 * self.p_c**2 + p.cmu * ((w @ z_sq) * diag_c)
        self._last_fitness_range = float(fitness.max() - fitness.min())
        self._last_z = self._last_x = None

    def _stop(self) -> dict:
        triggered = cp.stop_conditions(self, self.diag_c,
                                       self.diag_c.max() > 1e14 * self.diag_c.min())
        if self.tolfun is not None and self._last_fitness_range < self.tolfun:
            triggered["tolfun"] = self.tolfun
        return triggered
