"""Master + communication overhead of the MPI runtime, with a stand-in sleep evaluation.

    mpirun -n 8 .venv/bin/python benchmarks/mpi_overhead.py --dim 7168 --popsize 128 --generations 3
    mpirun -n 32 .venv/bin/python benchmarks/mpi_overhead.py --dim 7168 --popsize 128 --generations 3

Every candidate sleeps a time drawn per (generation, row) from [1 - s, 1 + s] x --mean-s with
s = --spread (unequal candidates, as with generations of different length). The real strategy
(--strategy, default auto: the own full CMA-ES at d = 7168) runs on rank 0, and every generation
is checkpointed into a temporary run directory the way essa-train does it (snapshot now, files
written in the background). Reported per generation:

- ideal: total sleep / workers, but at least the longest candidate;
- scheduled: the makespan of the dynamic hand-out itself (each task to the first free worker, in
  order) computed from the same durations with free messages; static: contiguous equal blocks;
- overhead share: (wall - scheduled) / wall, what the master (ask, tell, checkpoint) and the
  messages add to the generation; the measured round against ideal is also printed.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import numpy as np


def durations(generation: int, popsize: int, mean_s: float, spread: float) -> np.ndarray:
    """Sleep of each candidate (popsize,), the same on every rank."""
    return mean_s * np.random.default_rng([7, generation]).uniform(1 - spread, 1 + spread, popsize)


class SleepEvaluator:
    checksum = "bench"

    def __init__(self, mean_s: float, spread: float):
        self.mean_s, self.spread = mean_s, spread

    def prepare(self, setup):
        pass

    def score(self, rnd, task):
        t = durations(rnd.generation, len(rnd.labels), self.mean_s, self.spread)[task.row]
        time.sleep(t)
        return float(-np.sum(task.vector ** 2)), {"tokens": 0, "seconds": float(t)}

    def close(self):
        pass


def static_makespan(d: np.ndarray, workers: int) -> float:
    """Contiguous equal blocks of candidates per worker (no dynamic hand-out)."""
    return max(block.sum() for block in np.array_split(d, workers))


def scheduled_makespan(d: np.ndarray, workers: int) -> float:
    """The dynamic hand-out with free messages: task i goes to the first worker to be free."""
    free = np.zeros(workers)
    for t in d:
        free[np.argmin(free)] += t
    return float(free.max())


def main() -> None:
    from mpi4py import MPI
    import population
    from essa.runtime.master import Master
    from essa.runtime.messages import Setup
    from essa.runtime.state import CheckpointWriter
    from essa.runtime.transport import MpiMaster, MpiWorker
    from essa.runtime.worker import run_worker

    p = argparse.ArgumentParser()
    p.add_argument("--dim", type=int, default=7168)
    p.add_argument("--popsize", type=int, default=128)
    p.add_argument("--generations", type=int, default=3)
    p.add_argument("--mean-s", type=float, default=2.0, help="mean seconds per candidate")
    p.add_argument("--spread", type=float, default=0.5,
                   help="candidate times vary in [1 - spread, 1 + spread] x mean")
    p.add_argument("--strategy", default="auto", help="population strategy on rank 0")
    args = p.parse_args()
    comm = MPI.COMM_WORLD
    if comm.Get_rank() != 0:
        run_worker(MpiWorker(comm), lambda: SleepEvaluator(args.mean_s, args.spread))
        return
    transport = MpiMaster(comm)
    workers = len(transport.workers)
    master = Master(transport, "bench", task_timeout_s=600)
    master.setup(Setup({}, True))
    strategy = population.make_strategy(args.strategy, np.zeros(args.dim), 0.3, args.popsize, seed=0)
    run_dir = tempfile.TemporaryDirectory(prefix="mpi-overhead-")  # 1.6 GB at d = 7,168
    checkpoints = CheckpointWriter(run_dir.name)
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
        t1 = time.time()
        checkpoints.save(strategy, {"generation": g + 1})
        t_ckpt = time.time() - t1
        wall = time.time() - t0
        d = durations(g, args.popsize, args.mean_s, args.spread)
        ideal = max(d.sum() / workers, d.max())  # no schedule beats the longest candidate
        scheduled = scheduled_makespan(d, workers)
        rows.append({"generation": g, "wall_s": round(wall, 3), "ask_s": round(t_ask, 3),
                     "tell_s": round(t_tell, 3), "checkpoint_s": round(t_ckpt, 3),
                     "round_s": round(t_round, 3), "ideal_makespan_s": round(ideal, 3),
                     "scheduled_vs_ideal": round(scheduled / ideal, 3),
                     "static_vs_ideal": round(static_makespan(d, workers) / ideal, 3),
                     "round_vs_ideal": round(t_round / ideal, 3),
                     "overhead_share": round(1 - scheduled / wall, 4)})
        print(json.dumps(rows[-1]), flush=True)
    checkpoints.wait()
    run_dir.cleanup()
    master.stop("done")
    steady = rows[1:]

    def mean(key):
        return round(float(np.mean([r[key] for r in steady])), 4)

    print(json.dumps({"ranks": comm.Get_size(), "workers": workers, "dim": args.dim,
                      "strategy": population.resolve_name(args.strategy, args.dim),
                      "popsize": args.popsize, "mean_s": args.mean_s, "spread": args.spread,
                      **{f"mean_{k}": mean(k) for k in ("overhead_share", "scheduled_vs_ideal",
                                                        "static_vs_ideal", "round_vs_ideal",
                                                        "ask_s", "tell_s", "checkpoint_s")}}))


if __name__ == "__main__":
    main()
