"""OpenAI-style evolution strategy (Salimans et al. 2017), as used for full-parameter ES tuning.

Each generation samples ``popsize / 2`` Gaussian directions ``eps`` and evaluates the mirrored
pairs ``mean + sigma * eps`` and ``mean - sigma * eps`` (antithetic sampling). Fitness is
shaped into centered ranks in [-0.5, 0.5]; the gradient estimate is
``g = sum_i (r_i+ - r_i-) eps_i / (popsize * sigma)`` (the plain-ES estimator with mirrored
pairs), and the mean moves uphill by plain SGA ``mean += lr * g`` or by Adam. Optional L2 weight
decay pulls the mean toward zero, as in the original (off by default). Sigma stays fixed.
"""

from __future__ import annotations

import numpy as np

from population.base import Strategy
from population.bounds import clip_to_bounds
from population.fitness import centered_ranks


class OpenAIES(Strategy):
    """Antithetic ES with centered-rank shaping and an SGA or Adam update of the mean.

    ``popsize`` must be even. ``optimizer``: ``"adam"`` (default) or ``"sgd"``, both stepping
    by ``learning_rate``; ``beta1``, ``beta2`` and ``adam_eps`` are Adam's constants.
    Sampling is always mirrored (``mirrored`` is accepted for a uniform interface and ignored;
    ``self.mirrored`` is True). ``mean_lr`` multiplies the mean's step (there is no
    recombination here, so it is the same as scaling ``learning_rate``).
    """

    mirrored = True

    name = "openai-es"

    def __init__(self, x0, sigma0: float, popsize: int, seed: int, bounds=None,
                 learning_rate: float = 0.01, optimizer: str = "adam",
                 weight_decay: float = 0.0, beta1: float = 0.9, beta2: float = 0.999,
                 adam_eps: float = 1e-8, max_generations: int | None = None,
                 target_fitness: float | None = None, mirrored: bool = True,
                 mean_lr: float = 1.0):
        if int(popsize) % 2:
            raise ValueError("openai-es needs an even popsize (mirrored pairs)")
        # Always mirrored (its gradient estimator needs the pairs): ``mirrored=False``, a run
        # default meant for the CMA strategies, is accepted and changes nothing.
        super().__init__(x0, sigma0, popsize, seed, bounds, max_generations, target_fitness,
                         mirrored=True, mean_lr=mean_lr)
        if optimizer not in ("adam", "sgd"):
            raise ValueError("optimizer must be 'adam' or 'sgd'")
        self.learning_rate = float(learning_rate)
        self.optimizer = optimizer
        self.weight_decay = float(weight_decay)
        self.beta1, self.beta2, self.adam_eps = float(beta1), float(beta2), float(adam_eps)
        self.adam_m = np.zeros(self.dim)  # first-moment estimate
        self.adam_v = np.zeros(self.dim)  # second-moment estimate
        self.rng = np.random.Generator(np.random.PCG64(self.seed))
        self._eps: np.ndarray | None = None  # (popsize/2, dim) directions of the last ask
        self._last_x: np.ndarray | None = None  # (popsize, dim) candidates of the last ask

    def _ask(self) -> np.ndarray:
        half = self.popsize // 2
        self._eps = self.rng.standard_normal((half, self.dim))  # (popsize/2, d)
        pairs = np.concatenate([self._eps, -self._eps])  # rows i and i + half are mirrored
        self._last_x = clip_to_bounds(self._mean + self._sigma * pairs, self.bounds)
        return self._last_x

    def _tell(self, candidates: np.ndarray, fitness: np.ndarray) -> None:
        eps = self._directions(candidates)
        half = self.popsize // 2
        shaped = centered_ranks(fitness)
        gradient = (shaped[:half] - shaped[half:]) @ eps / (self.popsize * self._sigma)
        gradient -= self.weight_decay * self._mean
        step = self._step(gradient)
        if self.mean_lr != 1.0:  # a multiplier on the step (Adam state is not affected)
            step = self.mean_lr * step
        self._mean = clip_to_bounds(self._mean + step, self.bounds)
        self._eps = self._last_x = None

    def _directions(self, candidates: np.ndarray) -> np.ndarray:
        """The directions behind ``candidates``: those of the last ask when they come back
        unchanged (clipped or not), otherwise recovered from the first half of the rows."""
        if self._last_x is not None and np.array_equal(candidates, self._last_x):
            return self._eps
        return (candidates[: self.popsize // 2] - self._mean) / self._sigma

    def _step(self, gradient: np.ndarray) -> np.ndarray:
        """Ascent step from the gradient estimate: plain SGA or Adam (bias-corrected)."""
        if self.optimizer == "sgd":
            return self.learning_rate * gradient
        t = self.generation + 1
        self.adam_m = self.beta1 * self.adam_m + (1 - self.beta1) * gradient
        self.adam_v = self.beta2 * self.adam_v + (1 - self.beta2) * gradient**2
        m_hat = self.adam_m / (1 - self.beta1**t)
        v_hat = self.adam_v / (1 - self.beta2**t)
        return self.learning_rate * m_hat / (np.sqrt(v_hat) + self.adam_eps)
