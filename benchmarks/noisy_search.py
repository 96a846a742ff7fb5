"""Noisy search benchmark (#21): which sampling and update settings help ESSA's noisy fitness.

A synthetic stand-in for "mean verifiable reward of a LoRA candidate on a mini-batch": a pool of
prompts, each solved with probability

    p_j(x) = sigmoid(logit(q_j) + a <u_j, x> / sqrt(d) - k ||x||^2 / d),
    u_j = rho g + sqrt(1 - rho^2) e_j      (g, e_j ~ N(0, I_d), fixed per problem)

around the start x0 = 0 (the demo's search vector z, in relative units). g is an improvement
direction every prompt shares (what the search should find); e_j is the prompt's own direction
(moving along it helps that prompt only: fitting a mini-batch by it does not generalise); the
penalty makes large steps hurt everywhere (a random step of relative size 0.3 costs k * 0.09
logits on every prompt and, through e_j, shakes each prompt by a * 0.3). Base rates
q_j ~ Beta(0.4, 0.4) (clipped to [0.002, 0.998]): many prompts are (almost) always right or
always wrong at the start, as on a real task.

Fitness of a candidate = mean of B Bernoulli(p_j(x)) draws over the generation's mini-batch of B
training prompts (shared by all candidates). The true objective is mean_j p_j(x) over a
held-out pool at the final mean; the table reports it and its gain over the start.

Batch reuse ("informative-prompt-like"): half the batch fresh, half drawn from training prompts
whose last observed per-generation success share (over that generation's candidates) was
strictly between 0 and 1 (topped up with fresh prompts when too few are known).

Default run (5 seeds, d = 1,920 and 7,168, about 4 minutes of one core):
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/noisy_search.py
Quick check (one seed, d = 1,920, fewer configurations):
    .venv/bin/python benchmarks/noisy_search.py --quick

Strategies: "full" = cmaes-numpy (the own full CMA-ES, what ``auto`` picks at d = 7,168; pycma's
``cmaes`` is too slow to factor at 7,168 and the same algorithm), "sep" = sep-cmaes-numpy,
"iso" = sep-cmaes-numpy with ``isotropic=True`` (C = I, CSA step size only).
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout
import population  # noqa: E402

POOL = 5000  # training prompts
HELD_OUT = 2000  # prompts for the true objective
A = 2.0  # logit change per unit of <u_j, x> / sqrt(d)
RHO = 0.3  # share of the improvement direction in each prompt's direction
K = 3.0  # penalty on ||x||^2 / d
SIGMA0 = 0.3
STRATEGIES = {"full": ("cmaes-numpy", {}), "sep": ("sep-cmaes-numpy", {}),
              "iso": ("sep-cmaes-numpy", {"isotropic": True})}
SPLITS = [(4, 96), (6, 64), (8, 48), (12, 32), (16, 24), (24, 16), (32, 12), (48, 8)]


def sigmoid(t):
    return 1.0 / (1.0 + np.exp(-t))


class Problem:
    """One fixed problem instance per dimension (the seeds vary the search, not the task)."""

    def __init__(self, dim: int, problem_seed: int = 2111):
        rng = np.random.Generator(np.random.PCG64([problem_seed, dim]))
        n = POOL + HELD_OUT
        q = np.clip(rng.beta(0.4, 0.4, n), 0.002, 0.998)
        self.base = np.log(q / (1 - q))  # (n,)
        g = rng.standard_normal(dim, dtype=np.float32)
        e = rng.standard_normal((n, dim), dtype=np.float32)
        e *= np.float32(np.sqrt(1 - RHO**2))
        e += np.float32(RHO) * g
        self.u = e  # (n, d) float32: u_j = rho g + sqrt(1 - rho^2) e_j
        self.dim = dim

    def probabilities(self, rows, X: np.ndarray) -> np.ndarray:
        """p_j(x) for prompts ``rows`` (index array or slice) and candidates X (lam, d):
        (len(rows), lam)."""
        X = np.atleast_2d(X)
        drift = (self.u[rows] @ X.T.astype(np.float32)).astype(np.float64)
        penalty = K * np.einsum("ij,ij->i", X, X) / self.dim  # (lam,)
        return sigmoid(self.base[rows, None] + A * drift / np.sqrt(self.dim) - penalty[None, :])

    def true_objective(self, x: np.ndarray) -> float:
        return float(self.probabilities(slice(POOL, POOL + HELD_OUT), x).mean())


def run(problem: Problem, strategy: str, popsize: int, batch: int, generations: int,
        seed: int, mirrored: bool, mean_lr: float, reuse: bool) -> float:
    """True objective at the final mean of one search."""
    name, options = STRATEGIES[strategy]
    s = population.make_strategy(name, np.zeros(problem.dim), SIGMA0, popsize, seed=seed,
                                 mirrored=mirrored, mean_lr=mean_lr, **options)
    rng = np.random.Generator(np.random.PCG64([seed, 7]))  # batches and Bernoulli draws
    last_share = np.full(POOL, np.nan)  # per-generation success share, last time seen
    for _ in range(generations):
        rows = _batch(rng, batch, last_share if reuse else None)
        X = s.ask()
        solved = rng.random((batch, popsize)) < problem.probabilities(rows, X)
        s.tell(X, solved.mean(axis=0))
        last_share[rows] = solved.mean(axis=1)
    return problem.true_objective(s.mean)


def _batch(rng, size: int, last_share) -> np.ndarray:
    """Prompt ids: all fresh, or (reuse) half from the informative ones, the rest fresh."""
    if last_share is None:
        return rng.choice(POOL, size, replace=False)
    informative = np.flatnonzero((last_share > 0) & (last_share < 1))
    take = min(size // 2, informative.size)
    kept = rng.choice(informative, take, replace=False) if take else np.empty(0, np.int64)
    fresh_pool = np.setdiff1d(np.arange(POOL), kept, assume_unique=True)
    return np.concatenate([kept, rng.choice(fresh_pool, size - take, replace=False)])


def stats(values) -> tuple[float, float]:
    v = np.asarray(values)
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dims", type=int, nargs="+", default=[1920, 7168])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--generations", type=int, default=15)
    ap.add_argument("--popsize", type=int, default=12)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--quick", action="store_true",
                    help="one seed, d = 1,920, full and iso only, trade-off split subset")
    ap.add_argument("--no-tradeoff", action="store_true")
    ap.add_argument("--tradeoff-mean-lr", type=float, nargs="+", default=[1.0, 0.5])
    ap.add_argument("--tradeoff-evals", type=int, default=None,
                    help="evaluations per generation of the trade-off (default popsize x batch: "
                         "the splits 4x96 ... 48x8); others use every even divisor >= 4 "
                         "leaving >= 4 prompts")
    ap.add_argument("--only-tradeoff", action="store_true")
    args = ap.parse_args(argv)
    dims, seeds, strategies, splits = args.dims, list(range(1, args.seeds + 1)), \
        list(STRATEGIES), SPLITS
    if args.quick:
        dims, seeds, strategies = [1920], [1], ["full", "iso"]
        splits = [(4, 96), (12, 32), (48, 8)]
    per_generation = args.popsize * args.batch
    if args.tradeoff_evals and args.tradeoff_evals != per_generation:
        per_generation = args.tradeoff_evals
        splits = [(lam, per_generation // lam) for lam in range(4, per_generation // 4 + 1, 2)
                  if per_generation % lam == 0]
    main_grid = [] if args.only_tradeoff else list(itertools.product(
        strategies, (False, True), (1.0, 0.5), (False, True)))
    budget = args.generations * args.popsize * args.batch
    print(f"# Noisy search: {args.generations} generations x popsize {args.popsize} x "
          f"{args.batch} prompts = {budget} evaluations, sigma0 {SIGMA0}, seeds {seeds}, "
          f"{datetime.date.today()}\n")
    t_start = time.perf_counter()
    results = {}
    starts = {}
    for dim in dims:
        problem = Problem(dim)
        starts[dim] = problem.true_objective(np.zeros(dim))
        for strategy, mirrored, mean_lr, reuse in main_grid:
            results[dim, strategy, mirrored, mean_lr, reuse] = [
                run(problem, strategy, args.popsize, args.batch, args.generations, seed,
                    mirrored, mean_lr, reuse) for seed in seeds]
        if not args.no_tradeoff:
            for (lam, b), lr, mirrored in itertools.product(splits, args.tradeoff_mean_lr,
                                                            (False, True)):
                assert lam * b == per_generation, (lam, b)
                results[dim, "split", lam, b, lr, mirrored] = [
                    run(problem, "full", lam, b, args.generations, seed, mirrored, lr, False)
                    for seed in seeds]
        del problem
    elapsed = time.perf_counter() - t_start

    head = " | ".join(f"d = {d:,}: true objective (gain)" for d in dims)
    print(f"Start (x0 = 0), held-out true objective: "
          + ", ".join(f"d = {d:,}: {starts[d]:.4f}" for d in dims) + "\n")
    print(f"| strategy | mirrored | mean_lr | batch reuse | {head} |")
    print("|---|---|---|---|" + "---|" * len(dims))
    for strategy, mirrored, mean_lr, reuse in main_grid:
        cells = []
        for d in dims:
            m, sd = stats(results[d, strategy, mirrored, mean_lr, reuse])
            cells.append(f"{m:.4f} ± {sd:.4f} ({100 * (m - starts[d]):+.2f} pts)")
        print(f"| {strategy} | {'yes' if mirrored else 'no'} | {mean_lr:g} | "
              f"{'half' if reuse else 'no'} | " + " | ".join(cells) + " |")
    if not args.no_tradeoff:
        print(f"\nTrade-off at {per_generation} evaluations per generation "
              f"(full, no reuse), gain over the start in points, mean ± std:\n")
        columns = list(itertools.product(dims, args.tradeoff_mean_lr, (False, True)))
        print("| popsize x prompts | " + " | ".join(
            f"d={d}, lr {lr:g}, {'mirr.' if mirrored else 'plain'}"
            for d, lr, mirrored in columns) + " |")
        print("|---|" + "---|" * len(columns))
        for lam, b in splits:
            cells = []
            for d, lr, mirrored in columns:
                m, sd = stats(results[d, "split", lam, b, lr, mirrored])
                cells.append(f"{100 * (m - starts[d]):+.1f} ± {100 * sd:.1f}")
            print(f"| {lam} x {b} | " + " | ".join(cells) + " |")
    print(f"\n{elapsed:.0f} s wall")


if __name__ == "__main__":
    main()
