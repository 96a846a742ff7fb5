"""Master + communication overhead of the MPI runtime, with a stand-in sleep evaluation.

    mpirun -n 8 .venv/bin/python benchmarks/mpi_overhead.py --dim 7168 --popsize 128 --generations 3
    mpirun -n 32 .venv/bin/python benchmarks/mpi_overhead.py --dim 7168 --popsize 128 --generations 3
    mpirun -n 128 .venv/bin/python benchmarks/mpi_overhead.py --master-evaluates ...
    .venv/bin/python benchmarks/mpi_overhead.py --simulate-ranks 8 32 128 --mean-s 10 30 --generations 23

Every candidate sleeps a time drawn per (generation, row) from [1 - s, 1 + s] x --mean-s with
s = --spread (unequal candidates, as with generations of different length), spread evenly over
its --items prompts: a task holding a slice of the prompts (the end of a round is cut into
slices, ``runtime.min_task_items``) sleeps that share. The real strategy
(--strategy, default auto: the own full CMA-ES at d = 7168) runs on rank 0, and every generation
is checkpointed into a temporary run directory the way essa-train does it (snapshot now, files
written in the background). Reported per generation:

- ideal: total sleep / engines, but at least the longest candidate (the issue's definition);
- scheduled: the makespan of the dynamic hand-out itself (the runtime's own RoundTasks, each task
  to the first free engine) computed from the same durations with free messages; static:
  contiguous equal blocks of whole candidates;
- overhead share: (wall - scheduled) / wall, what the master (ask, tell, checkpoint) and the
  messages add to the generation; the measured round against ideal is also printed;
- overhead share, slept: the same against the schedule of the sleeps as they happened (each
  candidate's measured seconds), i.e. without the stand-in's own lateness (a sleeping process
  woken late on oversubscribed cores), which is neither master nor messages;
- pickup: per engine, the time from the start of the round (before its first message) to the
  start of the engine's first whole candidate (median and max over engines); "sent" is when
  the master had sent the last engine its first task.

--simulate-ranks R [R ...] runs without MPI: one process times the real strategy's ask, tell
and checkpoint per generation, and each rank count's round is the scheduled makespan of its
R - 1 engines (the same durations and cuts as above, free messages), so 128 ranks x 30-s
candidates need neither 128 processes nor an hour of sleeping. Reported per (ranks, mean
candidate seconds): the master's share = master / (master + scheduled makespan), where master
= ask + tell + checkpoint; messages are not in it (compare one real mpirun run).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
import time

from dataclasses import dataclass

import numpy as np

import population
from essa.runtime.master import Master
from essa.runtime.messages import Setup
from essa.runtime.scheduler import RoundTasks
from essa.runtime.state import CheckpointWriter
from essa.runtime.transport import LocalWorker, MasterTransport, MpiWorker
from essa.runtime.worker import run_worker

from essa.fitness import Score, fitness_vector


def durations(generation: int, popsize: int, mean_s: float, spread: float) -> np.ndarray:
    """Sleep of each candidate (popsize,), the same on every rank."""
    return mean_s * np.random.default_rng([7, generation]).uniform(1 - spread, 1 + spread, popsize)


@dataclass
class TimedScore(Score):
    """A Score that also says when and where a whole candidate started (for the pickup)."""

    started: float | None = None
    rank: int = -1


class SleepEvaluator:
    checksum = "bench"

    def __init__(self, mean_s: float, spread: float):
        from mpi4py import MPI
        self.mean_s, self.spread = mean_s, spread
        self.rank = MPI.COMM_WORLD.Get_rank()  # rank 0 too when the master evaluates

    def prepare(self, setup):
        pass

    def score(self, rnd, task):
        whole = durations(rnd.generation, len(rnd.labels), self.mean_s, self.spread)[task.row]
        t = whole * (task.stop - task.start) / len(rnd.item_ids)
        started, start = time.time(), time.perf_counter()
        time.sleep(t)
        # The sleep as it happened: the OS wakes a sleeper late when 2 cores carry 128 processes.
        is_whole = task.stop - task.start == len(rnd.item_ids)  # a whole candidate: its own start
        return TimedScore(np.full(task.stop - task.start, -np.sum(task.vector ** 2)),
                          seconds=time.perf_counter() - start, started=started if is_whole else None,
                          rank=self.rank)

    def close(self):
        pass


def static_makespan(d: np.ndarray, workers: int) -> float:
    """Contiguous equal blocks of candidates per worker (no dynamic hand-out)."""
    return max(block.sum() for block in np.array_split(d, workers))


def scheduled_makespan(d: np.ndarray, workers: int, items: int, min_task_items: int) -> tuple[float, int]:
    """(makespan, tasks) of the runtime's hand-out with free messages: each task, cut as
    RoundTasks cuts it, goes to the first engine to be free."""
    tasks = RoundTasks.build(0, 0, np.zeros((len(d), 1)), [(0, items)], workers, min_task_items)
    free, count = np.zeros(workers), 0
    while (task := tasks.assign(0)) is not None:
        free[np.argmin(free)] += d[task.row] * (task.stop - task.start) / items
        count += 1
    return float(free.max()), count


def simulate(args) -> None:
    """--simulate-ranks: time the master's real work alone, schedule the engines on paper."""
    strategy = population.make_strategy(args.strategy, np.zeros(args.dim), 0.3, args.popsize, seed=0)
    run_dir = tempfile.TemporaryDirectory(prefix="mpi-overhead-")
    checkpoints = CheckpointWriter(run_dir.name)
    masters = []
    for g in range(args.generations):
        factored = getattr(strategy, "factor_generation", 0)
        t0 = time.perf_counter()
        X = strategy.ask()
        t1 = time.perf_counter()
        if not args.no_prefetch:  # essa-train runs this while the workers evaluate
            strategy.prefetch()
        tp = time.perf_counter()
        strategy.tell(X, -np.einsum("ij,ij->i", X, X))
        t2 = time.perf_counter()
        checkpoints.save(strategy, {"generation": g + 1})
        t3 = time.perf_counter()
        masters.append(((t1 - t0) + (t3 - tp), tp - t1))  # (in line, prefetch)
        print(json.dumps({"generation": g, "ask_s": round(t1 - t0, 3), "prefetch_s": round(tp - t1, 3),
                          "tell_s": round(t2 - tp, 3), "checkpoint_s": round(t3 - t2, 3),
                          "factorized": getattr(strategy, "factor_generation", 0) != factored}),
              flush=True)
    checkpoints.wait()
    run_dir.cleanup()
    for ranks in args.simulate_ranks:
        for mean_s in args.mean_s:
            shares = []
            exposed = []
            for g, (inline, prefetch) in enumerate(masters):
                d = durations(g, args.popsize, mean_s, args.spread)
                scheduled, _ = scheduled_makespan(d, ranks - 1, args.items, args.min_task_items)
                # the prefetch overlaps the round; only what outlasts it holds up the tell
                exposed.append(inline + max(0.0, prefetch - scheduled))
                shares.append(exposed[-1] / (exposed[-1] + scheduled))
            print(json.dumps({"ranks": ranks, "mean_s": mean_s, "generations": len(masters),
                              "strategy": population.resolve_name(args.strategy, args.dim),
                              "master_s_mean": round(float(np.mean(exposed)), 3),
                              "master_s_max": round(max(exposed), 3),
                              "master_share_mean": round(float(np.mean(shares)), 5),
                              "master_share_max": round(max(shares), 5)}), flush=True)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--dim", type=int, default=7168)
    p.add_argument("--popsize", type=int, default=128)
    p.add_argument("--generations", type=int, default=3)
    p.add_argument("--mean-s", type=float, nargs="+", default=[2.0],
                   help="mean seconds per candidate (several only with --simulate-ranks)")
    p.add_argument("--spread", type=float, default=0.5,
                   help="candidate times vary in [1 - spread, 1 + spread] x mean")
    p.add_argument("--strategy", default="auto", help="population strategy on rank 0")
    p.add_argument("--items", type=int, default=256, help="prompts per candidate")
    p.add_argument("--min-task-items", type=int, default=16,
                   help="runtime.min_task_items: smallest slice at the end of a round (0: whole candidates)")
    p.add_argument("--master-evaluates", action="store_true",
                   help="runtime.master_evaluates: rank 0 also runs a (sleeping) worker, in a thread")
    p.add_argument("--no-prefetch", action="store_true",
                   help="do not call strategy.prefetch() during the round (the synchronous baseline)")
    p.add_argument("--simulate-ranks", type=int, nargs="+",
                   help="no MPI: time the master alone and schedule this many ranks on paper")
    args = p.parse_args()
    if args.simulate_ranks:
        simulate(args)
        return
    if len(args.mean_s) != 1:
        p.error("--mean-s takes one value with MPI")
    args.mean_s = args.mean_s[0]
    from mpi4py import MPI
    comm = MPI.COMM_WORLD
    make_evaluator = lambda: SleepEvaluator(args.mean_s, args.spread)  # noqa: E731
    if comm.Get_rank() != 0:
        run_worker(MpiWorker(comm), make_evaluator)
        return
    local_worker = LocalWorker(rank=0) if args.master_evaluates else None
    transport = MasterTransport(comm, local_worker)
    if local_worker is not None:
        threading.Thread(target=run_worker, args=(local_worker, make_evaluator), daemon=True).start()
    workers = len(transport.workers)
    first_sent: dict[int, float] = {}  # engine rank -> when this round's first task went to it
    plain_send = transport.send

    def send(rank, msg):
        plain_send(rank, msg)
        if type(msg).__name__ == "Task":
            first_sent.setdefault(rank, time.time())
    transport.send = send
    master = Master(transport, "bench", task_timeout_s=600, min_task_items=args.min_task_items)
    master.setup(Setup({}))
    strategy = population.make_strategy(args.strategy, np.zeros(args.dim), 0.3, args.popsize, seed=0)
    run_dir = tempfile.TemporaryDirectory(prefix="mpi-overhead-")  # 1.6 GB at d = 7,168
    checkpoints = CheckpointWriter(run_dir.name)
    rows = []
    for g in range(args.generations + 1):  # generation 0 also waits for the workers' Hello
        t0 = time.time()
        X = strategy.ask()
        t_ask = time.time() - t0
        t_round_start = time.time()
        first_sent.clear()
        with ThreadPoolExecutor(1) as ahead:  # as essa-train: the next samples during the round
            prefetch = ahead.submit(lambda: None if args.no_prefetch else strategy.prefetch())
            out = master.run_round(g, X, [f"c{i}" for i in range(len(X))], "train",
                                   np.arange(args.items), "x")
            prefetch.result()
        t_round = time.time() - t0 - t_ask
        t1 = time.time()
        strategy.tell(X, fitness_vector(out))
        t_tell = time.time() - t1
        t1 = time.time()
        checkpoints.save(strategy, {"generation": g + 1})
        t_ckpt = time.time() - t1
        wall = time.time() - t0
        d = durations(g, args.popsize, args.mean_s, args.spread)
        ideal = max(d.sum() / workers, d.max())  # no schedule beats the longest candidate
        scheduled, n_tasks = scheduled_makespan(d, workers, args.items, args.min_task_items)
        slept = np.array([score.seconds for score in out])  # per candidate, as measured
        first_start = {}  # engine rank -> start of its first whole candidate
        for score in (r.score for r in master.round.results.values()):
            if score.started is not None:
                first_start[score.rank] = min(first_start.get(score.rank, np.inf), score.started)
        pickup = np.array(sorted(first_start.values())) - t_round_start
        scheduled_slept, _ = scheduled_makespan(slept, workers, args.items, args.min_task_items)
        rows.append({"generation": g, "tasks": n_tasks, "wall_s": round(wall, 3), "ask_s": round(t_ask, 3),
                     "tell_s": round(t_tell, 3), "checkpoint_s": round(t_ckpt, 3),
                     "round_s": round(t_round, 3), "ideal_makespan_s": round(ideal, 3),
                     "scheduled_vs_ideal": round(scheduled / ideal, 3),
                     "static_vs_ideal": round(static_makespan(d, workers) / ideal, 3),
                     "round_vs_ideal": round(t_round / ideal, 3),
                     "overhead_share": round(1 - scheduled / wall, 4),
                     "overhead_share_slept": round(1 - scheduled_slept / wall, 4),
                     "late_wakeup_s": round(float(np.sum(slept - d)), 3),
                     "pickup_median_s": round(float(np.median(pickup)), 3) if pickup.size else None,
                     "pickup_max_s": round(float(pickup.max()), 3) if pickup.size else None,
                     "sent_max_s": round(max(first_sent.values()) - t_round_start, 3)})
        print(json.dumps(rows[-1]), flush=True)
    checkpoints.wait()
    run_dir.cleanup()
    master.stop("done")
    steady = rows[1:]

    def mean(key):
        return round(float(np.mean([r[key] for r in steady])), 4)

    print(json.dumps({"ranks": comm.Get_size(), "engines": workers, "dim": args.dim,
                      "master_evaluates": args.master_evaluates, "items": args.items,
                      "min_task_items": args.min_task_items,
                      "strategy": population.resolve_name(args.strategy, args.dim),
                      "popsize": args.popsize, "mean_s": args.mean_s, "spread": args.spread,
                      **{f"mean_{k}": mean(k) for k in ("overhead_share", "overhead_share_slept",
                                                        "scheduled_vs_ideal",
                                                        "static_vs_ideal", "round_vs_ideal",
                                                        "ask_s", "tell_s", "checkpoint_s")}}))


if __name__ == "__main__":
    main()
