"""Own numpy sep-CMA-ES (diagonal covariance), linear time and memory in the dimension.

The same update as pycma's ``CMA_diagonal=True`` (active CMA, CSA step size, pycma's separable
learning rates), written for large dimensions: standard normals come from a private PCG64
generator in float32 (half the time of float64; the sampling precision is irrelevant to the
search), and ``tell`` reuses the normals of the last ``ask`` when the candidates come back
unchanged, so it never divides the whole population by the scales again.

Bounds: candidates are clipped into the box, the update uses the unclipped samples, and the
mean is clipped into the box after each update.
"""

from __future__ import annotations

import numpy as np

from population import cma_params as cp
from population.base import Strategy
from population.bounds import clip_to_bounds


class NumpySepCMAES(Strategy):
    """Diagonal CMA-ES in numpy (own implementation, tested against pycma's sep-CMA-ES)."""

    name = "sep-cmaes-numpy"

    def __init__(self, x0, sigma0: float, popsize: int, seed: int, bounds=None,
                 max_generations: int | None = None, target_fitness: float | None = None,
                 tolx: float = 1e-11, tolfun: float | None = None):
        super().__init__(x0, popsize, seed, bounds, max_generations, target_fitness)
        if sigma0 <= 0:
            raise ValueError("sigma0 must be positive")
        self.params = cp.make_params(self.dim, self.popsize, separable=True)
        self._mean = clip_to_bounds(np.asarray(x0, dtype=np.float64).reshape(-1).copy(),
                                    self.bounds)
        self._sigma = float(sigma0)
        self.diag_c = np.ones(self.dim)  # diagonal of C
        self.p_sigma = np.zeros(self.dim)
        self.p_c = np.zeros(self.dim)
        self.rng = np.random.Generator(np.random.PCG64(self.seed))
        # tolfun is off by default: a noisy reward is often flat within a generation.
        self.tolx, self.tolfun = float(tolx), tolfun
        self._last_z: np.ndarray | None = None  # (popsize, d) float32 normals of the last ask
        self._last_x: np.ndarray | None = None  # (popsize, d) candidates of the last ask
        self._last_fitness_range = np.inf

    @property
    def mean(self) -> np.ndarray:
        return self._mean.copy()

    @property
    def sigma(self) -> float:
        return self._sigma

    def _ask(self) -> np.ndarray:
        z = self.rng.standard_normal((self.popsize, self.dim), dtype=np.float32)  # (lam, d)
        scale = (self._sigma * np.sqrt(self.diag_c)).astype(np.float32)
        x = self._mean + z * scale  # float32 product, float64 sum
        self._last_z, self._last_x = z, clip_to_bounds(x, self.bounds)
        return self._last_x

    def _normals(self, candidates: np.ndarray) -> np.ndarray:
        """z_i = C^{-1/2} (x_i - m) / sigma, taken from the last ask when unchanged."""
        if self._last_x is not None and np.array_equal(candidates, self._last_x):
            return self._last_z
        return (candidates - self._mean) / (self._sigma * np.sqrt(self.diag_c))

    def _tell(self, candidates: np.ndarray, fitness: np.ndarray) -> None:
        p = self.params
        order = np.argsort(-fitness, kind="stable")  # best first
        z = self._normals(candidates)[order]  # (lam, d), sorted
        d = np.sqrt(self.diag_c)
        z_mean = p.weights[:p.mu] @ z[:p.mu]  # (d,) float64
        y_mean = d * z_mean
        self._mean = self._mean + p.cm * self._sigma * y_mean  # eq. (41)
        self.p_sigma = cp.update_sigma_path(self.p_sigma, z_mean, p)
        h_sigma = cp.stall_indicator(self.p_sigma, self.generation, p)
        self.p_c = cp.update_cov_path(self.p_c, y_mean, h_sigma, p)
        self._update_diag_c(z, h_sigma)
        self._sigma = cp.update_sigma(self._sigma, self.p_sigma, p)
        self._mean = clip_to_bounds(self._mean, self.bounds)
        self._last_fitness_range = float(fitness.max() - fitness.min())
        self._last_z = self._last_x = None

    def _update_diag_c(self, z_sorted: np.ndarray, h_sigma: float) -> None:
        """Eq. (47) restricted to the diagonal: y_i^2 = diag(C) * z_i^2."""
        p = self.params
        z_sq = np.square(z_sorted, dtype=np.float64)  # (lam, d)
        w = cp.active_weights(z_sq.sum(axis=1), p)
        rank_mu = (w @ z_sq) * self.diag_c
        self.diag_c = (cp.cov_decay(h_sigma, p) * self.diag_c + p.c1 * self.p_c**2
                       + p.cmu * rank_mu)

    def _stop(self) -> dict:
        triggered = {}
        if self._sigma * np.sqrt(self.diag_c.max()) < self.tolx \
                and self._sigma * np.abs(self.p_c).max() < self.tolx:
            triggered["tolx"] = self.tolx
        if self.tolfun is not None and self._last_fitness_range < self.tolfun:
            triggered["tolfun"] = self.tolfun
        if self.diag_c.max() > 1e14 * self.diag_c.min():
            triggered["conditioncov"] = 1e14
        return triggered
