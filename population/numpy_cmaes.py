"""Own numpy CMA-ES with full covariance, written for d in the thousands.

The covariance update is the tutorial's (Hansen, arXiv:1604.00772, eqs. 41-47, active CMA) and
the constants are pycma's defaults (``population.cma_params``). What differs from pycma is how
C is factored for sampling, because the eigendecomposition is what dominates at large d (about
200 s for d = 7,168 on the 2-core test machine, see benchmarks/RESULTS.md):

* C = A A^T is factored by Cholesky (several times cheaper than ``eigh``) and, as in the
  tutorial's lazy update, only every ``1 / ((c1 + cmu) * d * 10)`` generations; between
  refreshes candidates are sampled from the last factor. A refresh for generation n factors C
  as it was after tell n - 2 - ``refresh_lead`` (staler than the tutorial's), so that it can run
  in a second background thread while generations n - 1 - lead ... n - 1 are evaluated: the
  O(d^3) Cholesky (seconds at d = 7,168) then never holds up an ask. ``refresh_lead`` is half the
  gap (0 below a gap of 2, e.g. every small-d problem, where C changes fast), so no factor is
  older than 1.5 gaps + 2 generations; at large d, C changes by about (c1 + cmu) per generation
  and that staleness is of the same order as the tutorial's.
* C itself is only needed by a refresh, so the told updates (eq. 47, as square roots of their
  weighted rows) wait in a queue and a refresh applies all that it needs at once: the decays
  multiply out and the rank-mu terms of all those generations stack into two symmetric
  products. At d = 7,168 such a product costs about the same for 128 rows as for 700 (it is
  bound by writing the d x d result), so eleven generations' updates cost what one did.
* The step-size path whitens the mean step with A^{-1} instead of the symmetric C^{-1/2}. Both
  map the selected steps onto N(0, I) under random selection, so the path length test is
  unchanged; A changes smoothly with C, as in Cholesky-CMA-ES (Krause et al., 2016).
* Sampling multiplies in float32 (half the time; the sampling precision is irrelevant), the
  covariance itself is kept and updated in float64.
* Background work (``background_update``, on by default): each ``ask`` leaves the next
  generation's samples (and a refresh due without lead) to a thread, and a refresh started
  ahead runs in a second one, so in a distributed run the master's heavy algebra overlaps the
  workers' evaluations and ask/tell return at once. Inline (``background_update=False``) the
  same arithmetic runs in the same order: the results are bit-identical. A pickle taken
  meanwhile holds one consistent state (C of the last refresh, the queued updates, the
  refresh in flight as the generations it covers) and continues identically after a load.
  Published arrays are replaced, never changed in place (``arrays_replaced_not_mutated``), so
  a checkpoint can be written from them without copying while the search goes on.

Bounds: candidates are clipped into the box, the update uses the unclipped samples, and the
mean is clipped into the box after each update.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from population import cma_params as cp
from population.base import Strategy
from population.bounds import clip_to_bounds


class NumpyCMAES(Strategy):
    """Full-covariance CMA-ES in numpy (own implementation, tested to converge like pycma)."""

    name = "cmaes-numpy"
    arrays_replaced_not_mutated = True  # see the module docstring; checked by a test

    def __init__(self, x0, sigma0: float, popsize: int, seed: int, bounds=None,
                 max_generations: int | None = None, target_fitness: float | None = None,
                 tolx: float = 1e-11, lazy_gap_factor: float = 1.0,
                 background_update: bool = True):
        super().__init__(x0, popsize, seed, bounds, max_generations, target_fitness)
        if sigma0 <= 0:
            raise ValueError("sigma0 must be positive")
        p = self.params = cp.make_params(self.dim, self.popsize, separable=False)
        self._mean = clip_to_bounds(np.asarray(x0, dtype=np.float64).reshape(-1).copy(),
                                    self.bounds)
        self._sigma = float(sigma0)
        self.cov = np.eye(self.dim)  # C, (d, d) float64
        self.factor = np.eye(self.dim)  # A with A A^T = C at the last refresh, lower triangular
        self.factor_generation = 0
        self.lazy_gap = lazy_gap_factor / ((p.c1 + p.cmu) * self.dim * 10)
        self.refresh_lead = int(self.lazy_gap // 2)  # generations the refresh starts ahead
        self.p_sigma = np.zeros(self.dim)
        self.p_c = np.zeros(self.dim)
        self.rng = np.random.Generator(np.random.PCG64(self.seed))
        self.tolx = float(tolx)
        self._factor32: tuple | None = None  # (factor_generation, float32 copy of A) for sampling
        self._next: tuple | None = None  # (generation, z, y, A) samples prepared for an ask
        self._last_factor: np.ndarray | None = None  # the A of the last ask
        self._last_z: np.ndarray | None = None  # (lam, d) float32 normals of the last ask
        self._last_y: np.ndarray | None = None  # (lam, d) float32 steps A z of the last ask
        self._last_x: np.ndarray | None = None  # (lam, d) candidates of the last ask
        self.background_update = bool(background_update)
        # Covariance updates told but not yet applied to self.cov, oldest first: each is
        # (generation, decay, positive rows, negative rows). Guarded by _lock with self.cov.
        # self.cov is C as of the last refresh (the C its factor was computed from).
        self._pending_updates: list[tuple[float, np.ndarray, np.ndarray]] = []
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self._sample_job = None  # Future of the next generation's samples
        # A factor refresh started ahead: (generation that will use it, last told generation
        # it applies). Pickled; its running work (_refresh_job: (generation, Future)) is not.
        self._refresh_input: tuple[int, int] | None = None
        self._refresh_job = None
        self._refresh_executor: ThreadPoolExecutor | None = None

    @property
    def mean(self) -> np.ndarray:
        return self._mean.copy()

    @property
    def sigma(self) -> float:
        return self._sigma

    def __getstate__(self):
        """Pickle without waiting for background work: everything it publishes (C and the
        pending updates; the factor, the generator and the next samples) changes together
        under the lock, so a pickle is always one consistent state."""
        with self._lock:
            state = self.__dict__.copy()
            state["_pending_updates"] = list(self._pending_updates)
        for key in ("_lock", "_executor", "_sample_job", "_factor32",
                    "_refresh_job", "_refresh_executor"):
            state[key] = None  # threads, futures, and the float32 copy of A (rebuilt)
        return state

    def __setstate__(self, state):
        # States written before the refresh lead existed continue with their own schedule.
        state.setdefault("refresh_lead", 0)
        state.setdefault("_refresh_input", None)
        state.pop("_job", None)  # earlier versions tracked a second future
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def wait_for_update(self) -> None:
        """Block until the next generation's samples are prepared (re-raising the background
        work's error); a refresh running ahead in its own thread is not waited for."""
        job, self._sample_job = self._sample_job, None
        if job is not None:
            job.result()

    def covariance(self) -> np.ndarray:
        """C with every told update applied (a new array; the search's own schedule of when
        updates are applied is not changed, so calling this never alters the trajectory). Its
        last bits depend on whether the background has already refreshed C for the next
        generation (the updates are applied in batches)."""
        self.wait_for_update()
        with self._lock:
            cov, updates = self.cov, list(self._pending_updates)
        return _with_updates(cov, updates)

    def _refresh_inputs(self, through: int) -> tuple[np.ndarray, list]:
        """C of the last refresh and the queued updates of generations <= ``through``."""
        with self._lock:
            return self.cov, [u for u in self._pending_updates if u[0] <= through]

    def _prepare_samples(self, n: int) -> None:
        """The samples of generation ``n``: refresh A if due, then z ~ N(0, I) and y = A z.

        Lazy update (tutorial, Sect. B.2) with a delay: a refresh for generation n factors C as
        it was after tell n - 2 - ``refresh_lead``, so this can run during generation n - 1's
        evaluations (background) or at ask n (inline), and the refresh itself during the
        ``refresh_lead`` generations before (its own thread); all give the same bits.
        """
        with self._lock:
            if self._next is not None and self._next[0] >= n:
                return
        cov, factor, factor_generation = self.cov, self.factor, self.factor_generation
        applied = None  # the last generation whose update the new C holds, if C is refreshed
        refresh = self._refresh_input
        if refresh is not None and refresh[0] == n:
            (cov, factor), factor_generation, applied = self._refreshed(*refresh), n, refresh[1]
            refresh = None
        elif refresh is None and n - factor_generation >= self.lazy_gap:
            (cov, factor), factor_generation, applied = _refresh(*self._refresh_inputs(n - 2)), n, n - 2
        if self.refresh_lead and refresh is None \
                and n + self.refresh_lead - factor_generation >= self.lazy_gap:
            refresh = (n + self.refresh_lead, n - 2)  # C after tell n - 2, for generation n + lead
        if refresh is not None:
            self._start_refresh(*refresh)
        if self._factor32 is None or self._factor32[0] != factor_generation:
            self._factor32 = (factor_generation, factor.astype(np.float32))
        rng = np.random.Generator(np.random.PCG64())
        rng.bit_generator.state = self.rng.bit_generator.state  # published with the samples
        z = rng.standard_normal((self.popsize, self.dim), dtype=np.float32)  # (lam, d)
        y = z @ self._factor32[1].T  # (lam, d) ~ N(0, C)
        with self._lock:
            if applied is not None:
                self.cov = cov
                self._pending_updates = [u for u in self._pending_updates if u[0] > applied]
            self.factor, self.factor_generation = factor, factor_generation
            self.rng, self._next, self._refresh_input = rng, (n, z, y, factor), refresh

    def _start_refresh(self, generation: int, through: int) -> None:
        """Refresh for ``generation`` in the refresh thread (background mode; once)."""
        if not self.background_update or (self._refresh_job is not None
                                          and self._refresh_job[0] == generation):
            return
        if self._refresh_executor is None:
            self._refresh_executor = ThreadPoolExecutor(1, thread_name_prefix="cma-refresh")
        job = self._refresh_executor.submit(_refresh, *self._refresh_inputs(through))
        self._refresh_job = (generation, job)

    def _refreshed(self, generation: int, through: int) -> tuple[np.ndarray, np.ndarray]:
        """(C, A) of the refresh started ahead for ``generation``: the refresh thread's result,
        or the same arithmetic here (inline mode, or a state loaded before the thread ran)."""
        job, self._refresh_job = self._refresh_job, None
        if job is not None and job[0] == generation:
            return job[1].result()
        return _refresh(*self._refresh_inputs(through))

    def _ask(self) -> np.ndarray:
        n = self.generation
        self.wait_for_update()  # the samples prepared in the background, or none queued
        self._prepare_samples(n)  # a no-op when the background already did it
        _, z, y, factor = self._next
        x = self._mean + self._sigma * y.astype(np.float64)
        self._last_z, self._last_y, self._last_factor = z, y, factor
        self._last_x = clip_to_bounds(x, self.bounds)
        if self.background_update:  # the next generation's samples, while this one is scored
            if self._executor is None:
                self._executor = ThreadPoolExecutor(1, thread_name_prefix="cma-samples")
            self._sample_job = self._executor.submit(self._prepare_samples, n + 1)
        return self._last_x

    def _samples(self, candidates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(z, y) with y_i = (x_i - m) / sigma and z_i = A^{-1} y_i, float64 (lam, d) each;
        taken from the last ask when the candidates come back unchanged."""
        if self._last_x is not None and np.array_equal(candidates, self._last_x):
            return self._last_z.astype(np.float64), self._last_y.astype(np.float64)
        # Slow path (O(d^3)): the caller told other vectors than it was asked.
        y = (candidates - self._mean) / self._sigma
        return np.linalg.solve(self._last_factor, y.T).T, y

    def _tell(self, candidates: np.ndarray, fitness: np.ndarray) -> None:
        p = self.params
        order = np.argsort(-fitness, kind="stable")  # best first
        z, y = self._samples(candidates)
        z, y = z[order], y[order]  # (lam, d) each, best first
        z_mean = p.weights[:p.mu] @ z[:p.mu]
        y_mean = p.weights[:p.mu] @ y[:p.mu]
        self._mean = self._mean + p.cm * self._sigma * y_mean  # eq. (41)
        self.p_sigma = cp.update_sigma_path(self.p_sigma, z_mean, p)
        h_sigma = cp.stall_indicator(self.p_sigma, self.generation, p)
        self.p_c = cp.update_cov_path(self.p_c, y_mean, h_sigma, p)
        self._update_cov(y, np.einsum("ij,ij->i", z, z), h_sigma)
        self._sigma = cp.update_sigma(self._sigma, self.p_sigma, p)
        self._mean = clip_to_bounds(self._mean, self.bounds)
        self._last_z = self._last_y = self._last_x = self._last_factor = None

    def _update_cov(self, y_sorted: np.ndarray, z_sq_norms: np.ndarray, h_sigma: float) -> None:
        """Queue eq. (47)'s update as square roots of its weighted rows."""
        p = self.params
        coef = p.cmu * cp.active_weights(z_sq_norms, p)  # (lam,)
        pos = np.vstack([np.sqrt(p.c1) * self.p_c,
                         np.sqrt(coef[coef > 0])[:, None] * y_sorted[coef > 0]])
        neg = np.sqrt(-coef[coef < 0])[:, None] * y_sorted[coef < 0]
        with self._lock:  # the refresh that first needs C after this tell applies it
            self._pending_updates = self._pending_updates + [
                (self.generation, cp.cov_decay(h_sigma, p), pos, neg)]

    def _stop(self) -> dict:
        self.wait_for_update()
        with self._lock:
            cov, updates = self.cov, list(self._pending_updates)
        diag = np.diag(cov).copy()  # with the pending updates, computed without applying them
        for _, decay, pos, neg in updates:
            diag = diag * decay + np.sum(pos**2, axis=0) - np.sum(neg**2, axis=0)
        triggered = {}
        if self._sigma * np.sqrt(diag.max()) < self.tolx \
                and self._sigma * np.abs(self.p_c).max() < self.tolx:
            triggered["tolx"] = self.tolx
        factor_diag = np.abs(np.diag(self.factor))
        # cond(C) >= (max/min of diag(A))^2: a cheap lower bound without a decomposition.
        if (factor_diag.max() / factor_diag.min()) ** 2 > 1e14:
            triggered["conditioncov"] = 1e14
        return triggered


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


def _refresh(cov: np.ndarray, updates: list) -> tuple[np.ndarray, np.ndarray]:
    """(C, A): C with ``updates`` applied and made exactly symmetric, and its lower Cholesky
    factor A."""
    cov = _with_updates(cov, updates)
    cov = (cov + cov.T) / 2  # rounding in the update is not symmetric
    return cov, _cholesky(cov)


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
