"""Search quality: evaluations to reach f < 1e-8 on sphere, ellipsoid and Rosenbrock.

Quick subset (about a minute on 2 cores):
    .venv/bin/python benchmarks/population_quality.py --dims 50 --functions sphere ellipsoid
Full (several minutes):
    .venv/bin/python benchmarks/population_quality.py --dims 50 200

Each strategy starts at x0 = 0.5 (sphere, ellipsoid) or 0 (Rosenbrock) with sigma0 = 0.5 and
pycma's default population size 4 + floor(3 ln d), the same seed for all; "pycma-direct" calls
cma.CMAEvolutionStrategy itself. The ratio is evaluations / pycma-direct in the same run
(the "cmaes" wrapper must match pycma-direct exactly: same seed, same candidates).
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path

import cma
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout
import population  # noqa: E402

TARGET = 1e-8


def sphere(x):
    return float(x @ x)


def ellipsoid(x):
    return float(np.sum(1e6 ** (np.arange(x.size) / (x.size - 1)) * x * x))


def rosenbrock(x):
    return float(np.sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2))


FUNCTIONS = {"sphere": sphere, "ellipsoid": ellipsoid, "rosenbrock": rosenbrock}


def pycma_direct(f, x0, sigma0, popsize, seed, budget, diagonal):
    es = cma.CMAEvolutionStrategy(x0, sigma0, {"popsize": popsize, "seed": seed,
                                  "verbose": -9, "verb_log": 0, "CMA_diagonal": diagonal,
                                  "tolflatfitness": np.inf})
    while es.countevals < budget:
        X = es.ask()
        costs = [f(x) for x in X]
        es.tell(X, costs)
        if min(costs) < TARGET:
            return es.countevals
    return np.inf


def strategy_run(name, f, x0, sigma0, popsize, seed, budget):
    s = population.make_strategy(name, x0, sigma0, popsize, seed)
    while s.evaluations < budget:
        X = s.ask()
        s.tell(X, [-f(x) for x in X])
        if -s.best_fitness < TARGET:
            return s.evaluations
    return np.inf


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", type=int, nargs="+", default=[50])
    parser.add_argument("--functions", nargs="+", default=list(FUNCTIONS), choices=FUNCTIONS)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--budget-factor", type=float, default=2e4,
                        help="evaluation budget = factor * d")
    parser.add_argument("--diagonal", action="store_true",
                        help="compare the diagonal variants instead of full covariance")
    args = parser.parse_args(argv)
    print(f"# population quality, {datetime.datetime.now().isoformat(timespec='seconds')}")
    print(f"# command: {' '.join(sys.argv)}")
    print("| function | d | variant | evaluations to 1e-8 | ratio to pycma-direct | s |")
    print("|---|---|---|---|---|---|")
    names = ["sep-cmaes", "sep-cmaes-numpy"] if args.diagonal else ["cmaes", "cmaes-numpy"]
    for fname in args.functions:
        f = FUNCTIONS[fname]
        for d in args.dims:
            x0 = np.zeros(d) if fname == "rosenbrock" else np.full(d, 0.5)
            popsize = 4 + int(3 * np.log(d))
            budget = int(args.budget_factor * d)
            start = time.perf_counter()
            base = pycma_direct(f, x0, 0.5, popsize, args.seed, budget, args.diagonal)
            print(f"| {fname} | {d} | pycma-direct | {base} | 1.00 | "
                  f"{time.perf_counter() - start:.1f} |", flush=True)
            for name in names:
                start = time.perf_counter()
                evals = strategy_run(name, f, x0, 0.5, popsize, args.seed, budget)
                print(f"| {fname} | {d} | {name} | {evals} | {evals / base:.2f} | "
                      f"{time.perf_counter() - start:.1f} |", flush=True)


if __name__ == "__main__":
    main()
