"""population: evolution strategies with ask/tell and exact checkpoints (numpy + cma only).

The search side of ESSA, reusable on its own: nothing here knows about LLMs or MPI (a test keeps
torch and essa out). Strategies, conventions and the checkpoint format: docs/population.md.

Usage::

    import population
    s = population.make_strategy("auto", x0, sigma0=0.3, popsize=24, seed=1)
    while not s.stop():
        X = s.ask()                       # (popsize, dim) float64
        s.tell(X, [reward(x) for x in X])  # higher is better; NaN/inf = failed candidate
        population.save_checkpoint(s, "run/strategy.ckpt")  # trusted files only: a pickle
    s.best_x, s.best_fitness, s.mean, s.sigma, s.generation
"""

from population.base import Strategy
from population.budget import split_budget
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
    "ARRAY_DIR", "AUTO_FULL_MAX_DIM", "AUTO_PYCMA_MAX_DIM", "ArrayFiles", "CheckpointError",
    "NumpyCMAES", "NumpySepCMAES", "OpenAIES", "PycmaCMAES", "STRATEGY_NAMES", "Snapshot",
    "Strategy", "centered_ranks", "load_checkpoint", "make_strategy", "resolve_name",
    "sanitize_fitness", "save_checkpoint", "shared_digests", "snapshot", "split_budget",
    "to_cost", "write_snapshot",
]
