"""Own numpy CMA-ES with full covariance, written for d in the thousands.

The update is the tutorial's (Hansen, arXiv:1604.00772, eqs. 41-47, active CMA) with pycma's
default constants (``population.cma_params``). What differs from pycma is how C is factored for
sampling, since the eigendecomposition is what dominates at large d (benchmarks/RESULTS.md,
"population/: strategy overhead and search quality"):

* Lazy update (tutorial, Sect. B.2): C = A A^T is Cholesky-factored (several times cheaper than
  ``eigh``) once ``lazy_gap`` generations have passed since the last factorisation; C moves by
  about (c1 + cmu) per generation, so the factor barely ages in between.
* ``tell`` only queues eq. (47)'s update (the square roots of its weighted rows); a
  factorisation applies the whole queue in two stacked symmetric products (``_with_updates``).
* The step-size path whitens with A^{-1} instead of C^{-1/2}: both map the selected steps onto
  N(0, I) under random selection, and A changes smoothly with C (Cholesky-CMA-ES, Krause et
  al., 2016).
* Sampling runs in float32 (half the time; its precision is irrelevant), so A is kept in float32;
  C is kept and updated in float64.
* ``mirrored``: half the normals are drawn, the other half are their negatives (rows i and
  i + lam / 2), and so are the steps y. ``mean_lr`` (c_m): m += c_m sigma y_w, paths as before.
* One generation of look-ahead: generation n samples from C as it was after tell n - 2, so
  ``prefetch()`` (between an ask and its tell) can draw them while the workers evaluate; the
  candidates are the same bits whether it was called or not.

Everything runs synchronously (this module starts no threads; a caller that runs ``prefetch`` in
one must finish it before ``tell``). Arrays are replaced, never changed in place, so a
checkpoint is frozen without copying; a pickle is the whole state and resumes bit-identically.
"""

from __future__ import annotations

import numpy as np

from population import cma_params as cp
from population.base import Strategy
from population.bounds import clip_to_bounds


class NumpyCMAES(Strategy):
    """Full-covariance CMA-ES in numpy (own implementation, tested to converge like pycma)."""

    name = "cmaes-numpy"
    arrays_replaced_not_mutated = True  # checked by a test

    def __init__(self, x0, sigma0: float, popsize: int, seed: int, bounds=None,
                 max_generations: int | None = None, target_fitness: float | None = None,
                 tolx: float = 1e-11, lazy_gap_factor: float = 1.0, mirrored: bool = False,
                 mean_lr: float = 1.0):
        super().__init__(x0, sigma0, popsize, seed, bounds, max_generations, target_fitness,
                         mirrored=mirrored, mean_lr=mean_lr)
        p = self.params = cp.make_params(self.dim, self.popsize, separable=False)
        self.lazy_gap = lazy_gap_factor / ((p.c1 + p.cmu) * self.dim * 10)
        self.cov = np.eye(self.dim)  # C as of the last factorisation, (d, d) float64
        self.factor = np.eye(self.dim, dtype=np.float32)  # lower A, A A^T = cov, (d, d)
        self.factor_generation = 0  # the generation whose samples first used the factor
        # eq. (47) updates not yet in self.cov, oldest first: (generation, decay, positive rows,
        # negative rows)
        self.pending_updates: list[tuple[int, float, np.ndarray, np.ndarray]] = []
        self.p_sigma = np.zeros(self.dim)
        self.p_c = np.zeros(self.dim)
        self.rng = np.random.Generator(np.random.PCG64(self.seed))
        self.tolx = float(tolx)
        self._last: tuple | None = None  # (x, z, y, A) of the last ask; z, y float32 (lam, d)
        self._next: tuple | None = None  # (generation, z, y) drawn ahead by prefetch()

    def covariance(self) -> np.ndarray:
        """C with every told update applied (a new array; the queue is left as it is, so
        calling this never alters the trajectory)."""
        cov = _with_updates(self.cov, self.pending_updates)
        return cov.copy() if cov is self.cov else cov

    def _ask(self) -> np.ndarray:
        n = self.generation
        if self._next is None or self._next[0] != n:
            self._next = self._draw(n)
        _, z, y = self._next
        x = clip_to_bounds(self._mean + self._sigma * y.astype(np.float64), self.bounds)
        self._last, self._next = (x, z, y, self.factor), None
        return x

    def prefetch(self) -> None:
        """Draw the next generation's samples now (and factor C if that generation is due).

        Call between ``ask`` and ``tell``; a no-op elsewhere or when already done. The next
        ``ask`` then only adds the mean. The result is the same as drawing in that ``ask``.
        """
        if self._last is not None and self._next is None:
            self._next = self._draw(self.generation + 1)

    def _draw(self, n: int) -> tuple:
        """(n, z, y): generation n's normals z and steps y = A z, float32 (lam, d)."""
        if n - self.factor_generation >= self.lazy_gap:
            self._factorize(through=n - 2, generation=n)
        if self.mirrored:  # y of the second half negated, not recomputed: exact mirrors
            half = self.rng.standard_normal((self.popsize // 2, self.dim), dtype=np.float32)
            y_half = half @ self.factor.T
            return n, np.concatenate([half, -half]), np.concatenate([y_half, -y_half])
        z = self.rng.standard_normal((self.popsize, self.dim), dtype=np.float32)  # (lam, d)
        return n, z, z @ self.factor.T  # y ~ N(0, C)

    def _factorize(self, through: int, generation: int) -> None:
        """Apply the queued updates of tells <= ``through`` to C and factor it (replacing both
        arrays); later updates stay queued."""
        applied = [u for u in self.pending_updates if u[0] <= through]
        cov = _with_updates(self.cov, applied)
        self.cov = (cov + cov.T) / 2  # rounding in the update is not symmetric
        self.factor = _cholesky(self.cov).astype(np.float32)
        self.pending_updates = [u for u in self.pending_updates if u[0] > through]
        self.factor_generation = generation

    def _samples(self, candidates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(z, y) with y_i = (x_i - m) / sigma and z_i = A^{-1} y_i, float64 (lam, d) each;
        taken from the last ask when the candidates come back unchanged."""
        if self._last is not None and np.array_equal(candidates, self._last[0]):
            return self._last[1].astype(np.float64), self._last[2].astype(np.float64)
        # Slow path (O(d^3)): the caller told other vectors than it was asked.
        y = (candidates - self._mean) / self._sigma
        return np.linalg.solve(self._last[3].astype(np.float64), y.T).T, y

    def _tell(self, candidates: np.ndarray, fitness: np.ndarray) -> None:
        p = self.params
        order = np.argsort(-fitness, kind="stable")  # best first
        z, y = (a[order] for a in self._samples(candidates))  # (lam, d) each, best first
        old_mean, old_sigma, y_mean = self._mean, self._sigma, p.weights[:p.mu] @ y[:p.mu]
        h_sigma = cp.advance(self, p.weights[:p.mu] @ z[:p.mu], y_mean)
        self._apply_mean_lr(old_mean, old_sigma, y_mean)
        # Queue eq. (47)'s update as the square roots of its weighted rows.
        decay, w = cp.cov_update_terms(np.einsum("ij,ij->i", z, z), h_sigma, p)
        coef = p.cmu * w  # (lam,)
        pos = np.vstack([np.sqrt(p.c1) * self.p_c,
                         np.sqrt(coef[coef > 0])[:, None] * y[coef > 0]])
        neg = np.sqrt(-coef[coef < 0])[:, None] * y[coef < 0]
        self.pending_updates = self.pending_updates + [(self.generation, decay, pos, neg)]
        self._last = None

    def _stop(self) -> dict:
        diag = np.diag(self.cov)  # with the queued updates, without applying them
        for _, decay, pos, neg in self.pending_updates:
            diag = diag * decay + np.sum(pos**2, axis=0) - np.sum(neg**2, axis=0)
        factor_diag = np.abs(np.diag(self.factor).astype(np.float64))
        # cond(C) >= (max/min of diag(A))^2: a cheap lower bound without a decomposition.
        return cp.stop_conditions(self, diag, (factor_diag.max() / factor_diag.min()) ** 2 > 1e14)


def _with_updates(cov: np.ndarray, updates: list) -> np.ndarray:
    """A new C: ``cov`` with the queued updates applied (``cov`` is not changed).

    Eq. (47) k times: C_k = decay_k C_{k-1} + P_k^T P_k - N_k^T N_k, multiplied out as
    (prod decay) C_0 + sum_k s_k (P_k^T P_k - N_k^T N_k), s_k the product of the later decays,
    with all sqrt(s_k)-scaled rows in two stacked products. A^T @ A of one buffer runs as a
    symmetric rank-k product (BLAS syrk); one update alone is the plain formula, bit for bit.
    """
    if not updates:
        return cov
    decays = np.array([u[1] for u in updates])
    later = np.append(np.cumprod(decays[:0:-1])[::-1], 1.0)  # s_k = prod of decays after k
    pos = np.vstack([u[2] if s == 1.0 else np.sqrt(s) * u[2] for u, s in zip(updates, later)])
    neg = np.vstack([u[3] if s == 1.0 else np.sqrt(s) * u[3] for u, s in zip(updates, later)])
    cov = cov * float(np.prod(decays))
    cov += pos.T @ pos
    if neg.size:
        cov -= neg.T @ neg
    return cov


def _cholesky(cov: np.ndarray) -> np.ndarray:
    """Lower Cholesky factor; adds a tiny ridge if rounding made C slightly indefinite."""
    ridge = 0.0
    scale = float(np.trace(cov)) / cov.shape[0]
    for _ in range(8):
        try:
            return np.linalg.cholesky(cov + ridge * np.eye(cov.shape[0]) if ridge else cov)
        except np.linalg.LinAlgError:
            ridge = max(ridge * 100, 1e-14 * scale)
    raise np.linalg.LinAlgError("covariance matrix is not positive definite")
