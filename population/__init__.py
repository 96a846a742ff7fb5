"""population: evolution strategies with ask/tell, exact checkpoints, pure numpy + cma.

The search side of ESSA, reusable on its own: nothing here knows about LLMs or MPI, and the
package imports only numpy, cma and the standard library (a test enforces it).

Usage::

    import population
    s = population.make_strategy("auto", x0, sigma0=0.3, popsize=24, seed=1)
    while not s.stop():
        X = s.ask()                       # (popsize, dim) float64
        s.tell(X, [reward(x) for x in X])  # higher is better; NaN/inf = failed candidate
        population.save_checkpoint(s, "run/strategy.ckpt")
    s.best_x, s.best_fitness, s.mean, s.sigma, s.generation

Strategies (``make_strategy`` names): ``cmaes`` (pycma, full covariance), ``sep-cmaes``
(pycma, diagonal), ``cmaes-numpy`` and ``sep-cmaes-numpy`` (own numpy CMA-ES, built for large
d), ``openai-es`` (antithetic ES with centered ranks, Adam or SGA), ``auto`` (pycma up to
``AUTO_PYCMA_MAX_DIM``, own full CMA-ES up to ``AUTO_FULL_MAX_DIM``, diagonal above).
Conventions: fitness is maximized and failed candidates are ranked last (``population.fitness``); the same seed gives the same candidates
regardless of numpy's global random state; checkpoints resume bit-exactly
(``population.checkpoint``; they contain a pickle: load trusted files only).
See docs/population.md.
"""

from population.base import Strategy
from population.checkpoint import (ARRAY_DIR, ArrayFiles, CheckpointError, Snapshot,
                                   load_checkpoint, save_checkpoint, shared_digests, snapshot,
                                   write_snapshot)
from population.factory import (AUTO_FULL_MAX_DIM, AUTO_PYCMA_MAX_DIM, STRATEGY_NAMES,
                                make_strategy, resolve_name)
from population.fitness import centered_ranks, sanitize_fitness, to_cost
from population.numpy_cmaes import NumpyCMAES
from population.numpy_sep_cmaes import NumpySepCMAES
from population.openai_es import OpenAIES
from population.pycma_cmaes import PycmaCMAES

__all__ = [
    "ARRAY_DIR", "AUTO_FULL_MAX_DIM", "AUTO_PYCMA_MAX_DIM", "ArrayFiles", "CheckpointError", "NumpyCMAES", "NumpySepCMAES",
    "OpenAIES", "PycmaCMAES", "STRATEGY_NAMES", "Snapshot", "Strategy", "centered_ranks", "load_checkpoint",
    "make_strategy", "resolve_name", "sanitize_fitness", "save_checkpoint", "shared_digests",
    "snapshot", "to_cost", "write_snapshot",
]
