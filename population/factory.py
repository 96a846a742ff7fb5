"""``make_strategy``: one entry point that builds any strategy by name."""

from __future__ import annotations

import numpy as np

from population.base import Strategy
from population.numpy_cmaes import NumpyCMAES
from population.numpy_sep_cmaes import NumpySepCMAES
from population.openai_es import OpenAIES
from population.pycma_cmaes import PycmaCMAES

AUTO_PYCMA_MAX_DIM = 2048
"""``"auto"`` uses pycma's full CMA-ES up to this dimension and the own numpy one above it.

pycma refreshes its eigendecomposition every few generations, which grows as d^3 and stalls the
master: 196 s at d = 7,168 on the test machine, against 13.5 s for the numpy variant's Cholesky,
which also updates C in a background thread (benchmarks/RESULTS.md).
"""

AUTO_FULL_MAX_DIM = 8192
"""``"auto"`` uses full-covariance CMA-ES up to this dimension and sep-CMA-ES above it.

Chosen from benchmarks/RESULTS.md: a full C costs 8 d^2 bytes several times over
(pycma keeps C, B and temporaries: about 1.6 GB at d = 8,192, 8.6 GB per matrix at 32,768) and
its lazy factorization grows as d^3; 8,192 keeps the paper's d = 7,168 on the full method.
"""

STRATEGY_NAMES = ("cmaes", "sep-cmaes", "cmaes-numpy", "sep-cmaes-numpy", "openai-es", "auto")


def resolve_name(name: str, dim: int) -> str:
    """The concrete strategy name ``make_strategy`` builds for ``name`` at dimension ``dim``."""
    if name not in STRATEGY_NAMES:
        raise ValueError(f"unknown strategy {name!r}; choose one of {STRATEGY_NAMES}")
    if name == "auto":
        if dim <= AUTO_PYCMA_MAX_DIM:
            return "cmaes"
        return "cmaes-numpy" if dim <= AUTO_FULL_MAX_DIM else "sep-cmaes-numpy"
    return name


def make_strategy(name: str, x0, sigma0: float, popsize: int, seed: int, bounds=None,
                  **options) -> Strategy:
    """Build a strategy maximizing fitness, started at ``x0`` with step size ``sigma0``.

    ``name``: ``"cmaes"`` (pycma, full covariance: the paper's method), ``"sep-cmaes"`` (pycma,
    diagonal), ``"cmaes-numpy"`` / ``"sep-cmaes-numpy"`` (own numpy implementations, faster at
    large d), ``"openai-es"`` (antithetic ES, centered ranks, Adam or SGA), or ``"auto"``
    (``"cmaes"`` up to ``AUTO_PYCMA_MAX_DIM``, ``"cmaes-numpy"`` up to ``AUTO_FULL_MAX_DIM``,
    ``"sep-cmaes-numpy"`` above).
    ``bounds``: ``None`` or ``(lower, upper)``, each a scalar, a per-coordinate sequence or
    ``None``. ``options``: passed to the strategy's constructor (``max_generations`` and
    ``target_fitness`` for all; pycma options for the pycma ones; see each class).
    """
    dim = int(np.asarray(x0).size)
    concrete = resolve_name(name, dim)
    if concrete in ("cmaes", "sep-cmaes"):
        return PycmaCMAES(x0, sigma0, popsize, seed, bounds,
                          diagonal=concrete == "sep-cmaes", **options)
    builders = {"cmaes-numpy": NumpyCMAES, "sep-cmaes-numpy": NumpySepCMAES,
                "openai-es": OpenAIES}
    return builders[concrete](x0, sigma0, popsize, seed, bounds, **options)
