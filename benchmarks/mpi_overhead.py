"""Master + communication overhead of the MPI runtime, with a stand-in sleep evaluation.

    mpirun -n 8 .venv/bin/python benchmarks/mpi_overhead.py --dim 7168 --popsize 128 --generations 3
    mpirun -n 32 .venv/bin/python benchmarks/mpi_overhead.py --dim 7168 --popsize 128 --generations 3

Every candidate sleeps a time drawn per (generation, row) from [0.5, 1.5] x --mean-s (unequal
candidates, as with generations of different length). The real strategy (pycma full CMA-ES at
d = 7168 by default; --strategy cmaes-numpy for the own one) runs on rank 0. Reported per generation: wall time, the dynamic scheduler's makespan
against the ideal (total sleep / workers, at least the longest candidate), a static split's makespan computed from the same
durations, and the master's share (ask + tell + messages) of the wall time.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def durations(generation: int, popsize: int, mean_s: float) -> np.ndarray:
    """Sleep of each candidate (popsize,), the same on every rank."""
    return mean_s * np.random.default_rng([7, generation]).uniform(0.5, 1.5, popsize)


class SleepEvaluator:
    checksum = "bench"

    def __init__(self, mean_s: float):
        self.mean_s = mean_s

    def prepare(self, setup):
        pass

    def score(self, rnd, task):
        t = durations(rnd.generation, len(rnd.labels), self.mean_s)[task.row]
        time.sleep(t)
        return float(-np.sum(task.vector ** 2)), {"tokens": 0, "seconds": float(t)}

    def close(self):
        pass


def static_makespan(d: np.ndarray, workers: int) -> float:
    """Contiguous equal blocks of candidates per worker (no dynamic hand-out)."""
    return max(block.sum() for block in np.array_split(d, workers))


def main() -> None:
    from mpi4py import MPI
    import population
    from essa.runtime.master import Master
    from essa.runtime.messages import Setup
    from essa.runtime.transport import MpiMaster, MpiWorker
    from essa.runtime.worker import run_worker

    p = argparse.ArgumentParser()
    p.add_argument("--dim", type=int, default=7168)
    p.add_argument("--popsize", type=int, default=128)
    p.add_argument("--generations", type=int, default=3)
    p.add_argument("--mean-s", type=float, default=0.05)
    p.add_argument("--strategy", default="cmaes", help="population strategy on rank 0 (e.g. cmaes-numpy)")
    args = p.parse_args()
    comm = MPI.COMM_WORLD
    if comm.Get_rank() != 0:
        run_worker(MpiWorker(comm), lambda: SleepEvaluator(args.mean_s))
        return
    transport = MpiMaster(comm)
    workers = len(transport.workers)
    master = Master(transport, "bench", task_timeout_s=600)
    master.setup(Setup({}, True))
    strategy = population.make_strategy(args.strategy, np.zeros(args.dim), 0.3, args.popsize, seed=0)
    rows = []
    for g in range(args.generations + 1):  # generation 0 also waits for the workers' Hello
        t0 = time.time()
        X = strategy.ask()
        t_ask = time.time() - t0
        out = master.run_round(g, X, [f"c{i}" for i in range(len(X))], "train", np.arange(1), "x")
        t_round = time.time() - t0 - t_ask
        t1 = time.time()
        strategy.tell(X, out.fitness)
        t_tell = time.time() - t1
        wall = time.time() - t0
        d = durations(g, args.popsize, args.mean_s)
        ideal = max(d.sum() / workers, d.max())  # no schedule beats the longest candidate
        rows.append({"generation": g, "wall_s": round(wall, 3), "ask_s": round(t_ask, 3),
                     "tell_s": round(t_tell, 3), "round_s": round(t_round, 3),
                     "ideal_makespan_s": round(ideal, 3),
                     "dynamic_vs_ideal": round(t_round / ideal, 3),
                     "static_vs_ideal": round(static_makespan(d, workers) / ideal, 3),
                     "overhead_share": round(1 - ideal / wall, 3)})
        print(json.dumps(rows[-1]), flush=True)
    master.stop("done")
    steady = rows[1:]
    print(json.dumps({"ranks": comm.Get_size(), "workers": workers, "dim": args.dim,
                      "strategy": args.strategy,
                      "popsize": args.popsize, "mean_s": args.mean_s,
                      "mean_overhead_share": round(float(np.mean([r["overhead_share"] for r in steady])), 3),
                      "mean_dynamic_vs_ideal": round(float(np.mean([r["dynamic_vs_ideal"] for r in steady])), 3),
                      "mean_static_vs_ideal": round(float(np.mean([r["static_vs_ideal"] for r in steady])), 3)}))


if __name__ == "__main__":
    main()
