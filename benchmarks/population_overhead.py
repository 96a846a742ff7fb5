"""Overhead of ask + tell per generation: population strategies next to a bare pycma loop.

Quick subset (a few minutes on 2 cores):
    .venv/bin/python benchmarks/population_overhead.py --dims 448 2048 --popsizes 24 128
Full grid (long: full covariance at d = 7,168 runs an eigendecomposition of minutes in pycma):
    .venv/bin/python benchmarks/population_overhead.py --dims 448 2048 7168 32768 131072 \
        --popsizes 24 96 128 --generations 12

Fitness is a cheap sphere so that only the strategy is timed. Each cell reports the mean and the
maximum seconds per generation (the maximum shows lazy factorizations) and the ratio of the
mean to the bare pycma loop of the same covariance type measured in the same run. Full
covariance is skipped above --max-full-dim (memory: pycma holds several d x d float64 matrices,
8.6 GB each at d = 32,768).
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


class BarePycma:
    """The baseline: pycma called directly (cost = sphere), no wrapper."""

    def __init__(self, x0, sigma0, popsize, seed, diagonal):
        self.es = cma.CMAEvolutionStrategy(x0, sigma0, {"popsize": popsize, "seed": seed,
                                           "CMA_diagonal": diagonal, "verbose": -9,
                                           "verb_log": 0, "tolflatfitness": np.inf})

    def step(self):
        X = self.es.ask()
        self.es.tell(X, [float(x @ x) for x in X])


class Wrapped:
    """A population strategy (reward = -sphere)."""

    def __init__(self, name, x0, sigma0, popsize, seed):
        self.s = population.make_strategy(name, x0, sigma0, popsize, seed)

    def step(self):
        X = self.s.ask()
        self.s.tell(X, -np.einsum("ij,ij->i", X, X))


def time_loop(runner, generations):
    times = []
    for _ in range(generations):
        start = time.perf_counter()
        runner.step()
        times.append(time.perf_counter() - start)
    return float(np.mean(times)), float(np.max(times))


def variants(full: bool):
    if full:
        return [("pycma-bare", lambda *a: BarePycma(*a, diagonal=False)),
                ("cmaes", lambda *a: Wrapped("cmaes", *a)),
                ("cmaes-numpy", lambda *a: Wrapped("cmaes-numpy", *a))]
    return [("pycma-bare", lambda *a: BarePycma(*a, diagonal=True)),
            ("sep-cmaes", lambda *a: Wrapped("sep-cmaes", *a)),
            ("sep-cmaes-numpy", lambda *a: Wrapped("sep-cmaes-numpy", *a))]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", type=int, nargs="+", default=[448, 2048])
    parser.add_argument("--popsizes", type=int, nargs="+", default=[24, 128])
    parser.add_argument("--generations", type=int, default=5,
                        help="timed generations per cell (after one untimed warm-up)")
    parser.add_argument("--covariance", choices=["full", "diagonal", "both"], default="both")
    parser.add_argument("--max-full-dim", type=int, default=8192)
    parser.add_argument("--variants", nargs="*", default=None,
                        help="only these variant names (default: all)")
    args = parser.parse_args(argv)
    print(f"# population overhead, {datetime.datetime.now().isoformat(timespec='seconds')}")
    print(f"# command: {' '.join(sys.argv)}")
    print("| cov | d | lambda | variant | mean s/gen | max s/gen | ratio to bare |")
    print("|---|---|---|---|---|---|---|")
    kinds = {"full": [True], "diagonal": [False], "both": [True, False]}[args.covariance]
    for full in kinds:
        for d in args.dims:
            for lam in args.popsizes:
                cov = "full" if full else "diag"
                if full and d > args.max_full_dim:
                    print(f"| {cov} | {d} | {lam} | all | skipped: d x d float64 = "
                          f"{8 * d * d / 2**30:.1f} GiB per matrix | | |", flush=True)
                    continue
                baseline = None
                for name, build in variants(full):
                    if args.variants and name not in args.variants and name != "pycma-bare":
                        continue
                    runner = build(np.full(d, 1.0), 0.1, lam, 1)
                    runner.step()  # warm-up: first-call allocations
                    mean, worst = time_loop(runner, args.generations)
                    baseline = mean if name == "pycma-bare" else baseline
                    print(f"| {cov} | {d} | {lam} | {name} | {mean:.3f} | {worst:.3f} | "
                          f"{mean / baseline:.2f} |", flush=True)
                    del runner


if __name__ == "__main__":
    main()
