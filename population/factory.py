"""``make_strategy``: one entry point that builds any strategy by name."""

from __future__ import annotations

import functools

import numpy as np

from population.base import Strategy
from population.numpy_cmaes import NumpyCMAES
from population.numpy_sep_cmaes import NumpySepCMAES
from population.openai_es import OpenAIES
from population.pycma_cmaes import PycmaCMAES

# Where "auto" switches (why: benchmarks/RESULTS.md, "population/: strategy overhead and search
# quality"): pycma's eigendecomposition grows as d^3 and stalls the master, the own Cholesky is
# many times cheaper; a full C costs 8 d^2 bytes several times over, and 8,192 keeps the paper's
# d = 7,168 on the full method.
AUTO_PYCMA_MAX_DIM = 2048
"""``"auto"`` uses pycma's full CMA-ES up to this dimension and the own numpy one above it."""
AUTO_FULL_MAX_DIM = 8192
"""``"auto"`` uses full-covariance CMA-ES up to this dimension and sep-CMA-ES above it."""

_BUILDERS = {"cmaes": PycmaCMAES, "sep-cmaes": functools.partial(PycmaCMAES, diagonal=True),
             "cmaes-numpy": NumpyCMAES, "sep-cmaes-numpy": NumpySepCMAES,
             "openai-es": OpenAIES}
STRATEGY_NAMES = (*_BUILDERS, "auto")


def resolve_name(name: str, dim: int) -> str:
    """The concrete strategy name ``make_strategy`` builds for ``name`` at dimension ``dim``."""
    if name not in STRATEGY_NAMES:
        raise ValueError(f"unknown strategy {name!r}; choose one of {STRATEGY_NAMES}")
    if name != "auto":
        return name
    if dim <= AUTO_PYCMA_MAX_DIM:
        return "cmaes"
    return "cmaes-numpy" if dim <= AUTO_FULL_MAX_DIM else "sep-cmaes-numpy"


def make_strategy(name: str, x0, sigma0: float, popsize: int, seed: int, bounds=None,
                  **options) -> Strategy:
    """Build strategy ``name`` (one of ``STRATEGY_NAMES``; the table in docs/population.md),
    maximizing fitness from ``x0`` with step size ``sigma0``.

    ``bounds``: ``None`` or ``(lower, upper)``, each a scalar, a per-coordinate sequence or
    ``None``. ``options`` go to the strategy's constructor (``max_generations`` and
    ``target_fitness`` for all; ``mirrored`` (mirrored pairs, rows i and i + popsize / 2; an
    even popsize) and ``mean_lr`` (the mean's learning rate c_m in (0, 1]) for all, both off
    by default (``openai-es`` is always mirrored; there ``mean_lr`` scales its step);
    ``isotropic`` for ``sep-cmaes-numpy``; pycma options for ``cmaes`` and ``sep-cmaes``; see
    each class).
    """
    concrete = resolve_name(name, int(np.asarray(x0).size))
    return _BUILDERS[concrete](x0, sigma0, popsize, seed, bounds, **options)
