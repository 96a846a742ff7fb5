"""The master's side of a round: send it once, hand out tasks dynamically, gather the results.

Errors a user must see end the round with :class:`WorkerFailure`, whose message names the rank,
the candidate and the cause; a stop signal ends it with :class:`Interrupted`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from essa.runtime.messages import Failure, Hello, Result, Round, Setup
from essa.runtime.scheduler import RoundTasks, split_items

log = logging.getLogger("essa")
EVAL_CHUNK = 16  # items per task when a few vectors are scored on many items (evaluations)


class WorkerFailure(RuntimeError):
    """A worker raised, died or hung: the job cannot go on."""


class Interrupted(Exception):
    """A stop signal arrived and the current round was abandoned."""


@dataclass
class RoundOutcome:
    """Per-row fitness (n,) and stats of one finished round."""

    fitness: np.ndarray  # (n,) float64, NaN = failed candidate
    stats: list[dict]
    tasks_by_rank: dict = field(default_factory=dict)
    busy_by_rank: dict = field(default_factory=dict)  # seconds spent evaluating, per rank
    stale: int = 0


class Master:
    """Drives rounds over a master-side transport; remembers which workers are ready."""

    def __init__(self, transport, checksum: str, task_timeout_s: float,
                 should_abandon: Callable[[], bool] = lambda: False, min_task_items: int = 0):
        self.transport = transport
        self.checksum = checksum
        self.task_timeout_s = task_timeout_s
        self.min_task_items = min_task_items
        self.should_abandon = should_abandon
        self.ready: list[int] = []
        self.capacity: dict[int, int] = {}  # tasks a worker may hold: two engine passes' worth
        self.first_ready_at: float | None = None  # when the first worker said Hello
        self.engines: dict[int, str] = {}  # rank -> its engine as built (dtype, compile), for the record
        self._round_id = 0
        self._started = time.time()

    def setup(self, msg: Setup) -> None:
        self.transport.broadcast(msg)

    def run_round(self, generation: int, vectors: np.ndarray, labels: list[str], split: str,
                  item_ids: np.ndarray, kind: str, split_rows: bool = False) -> RoundOutcome:
        """Score every row of ``vectors`` (n, d) on ``item_ids``; with ``split_rows`` the items are
        cut into chunks of EVAL_CHUNK items (evaluations of a few vectors on many items). The last
        tasks of a round may be cut further (``min_task_items``, see scheduler.py)."""
        self._round_id += 1
        rnd = Round(self._round_id, generation, labels, split, item_ids, kind)
        self.transport.broadcast(rnd)
        # Evaluations: fixed chunks of EVAL_CHUNK items, so several workers share a few vectors.
        # The fitness is the mean of per-item scores, whatever the chunks and the number of ranks.
        parts = -(-len(item_ids) // EVAL_CHUNK) if split_rows else 1
        tasks = RoundTasks.build(rnd.round_id, generation, vectors, split_items(len(item_ids), parts),
                                 workers=len(self.transport.workers), min_items=self.min_task_items)
        while not tasks.done():
            self._dispatch(tasks)
            msg = self.transport.poll(timeout=0.05)
            if msg is not None:
                self._handle(msg, tasks, labels)
            self._check_time(tasks, labels)
            if self.should_abandon():
                raise Interrupted(f"generation {generation} abandoned")
        return _combine(tasks, len(labels), len(item_ids))

    def _dispatch(self, tasks: RoundTasks) -> None:
        """Give every idle worker a task; while more tasks wait than there are workers, also
        queue more behind a running one (up to two engine passes' worth, the fewest-held worker
        first), so a worker starts its next pass the moment it sends its results instead of after
        a round trip, and a worker that scores several candidates per pass has them at hand. The
        tail stays dynamic: the last tasks go one at a time to whichever worker is free."""
        while tasks.tasks:
            rank = next((r for r in self.ready if tasks.held(r) == 0), None)
            if rank is None and len(tasks.tasks) > len(self.ready):
                open_ranks = [r for r in self.ready if tasks.held(r) < self.capacity.get(r, 2)]
                rank = min(open_ranks, key=tasks.held, default=None)
            if rank is None:
                return
            self.transport.send(rank, tasks.assign(rank))

    def _handle(self, msg, tasks: RoundTasks, labels: list[str]) -> None:
        if isinstance(msg, Hello):
            if msg.checksum != self.checksum:
                raise WorkerFailure(f"rank {msg.rank} ({msg.host}) rebuilt a different search space "
                                    f"(checksum {msg.checksum[:12]} != {self.checksum[:12]})")
            log.info("worker rank %d ready on %s after %.0f s%s", msg.rank, msg.host,
                     time.time() - self._started, f": {msg.engine}" if msg.engine else "")
            self.engines[msg.rank] = msg.engine
            self.first_ready_at = self.first_ready_at or time.time()
            self.ready.append(msg.rank)
            self.capacity[msg.rank] = 2 * max(1, msg.tasks_per_pass)
        elif isinstance(msg, Failure):
            what = f"candidate {msg.row} ({labels[msg.row]})" if 0 <= msg.row < len(labels) else "no candidate"
            raise WorkerFailure(f"worker rank {msg.rank} failed in generation {msg.generation}, "
                                f"{what}: {msg.cause}")
        elif isinstance(msg, Result):
            tasks.accept(msg, self._round_id)

    def _check_time(self, tasks: RoundTasks, labels: list[str]) -> None:
        late = tasks.overdue(self.task_timeout_s)
        if late is not None:
            rank, task, seconds = late
            raise WorkerFailure(f"worker rank {rank} gave no answer for candidate {task.row} "
                                f"({labels[task.row]}) of generation {task.generation} after "
                                f"{seconds:.0f} s (runtime.task_timeout_s): hung or dead")
        if not self.ready and time.time() - self._started > self.task_timeout_s:
            raise WorkerFailure(f"no worker became ready within {self.task_timeout_s:.0f} s")

    def stop(self, reason: str) -> None:
        from essa.runtime.messages import Stop
        self.transport.broadcast(Stop(reason))
        self.transport.flush()


def _combine(tasks: RoundTasks, rows: int, n_items: int) -> RoundOutcome:
    """Per row, the mean of its per-item scores in item order, so the fitness does not depend on
    how the row was cut into tasks or on the number of ranks (a NaN item fails the row); token
    counts summed, other stats item-weighted."""
    scores = np.full((rows, n_items), np.nan)
    stats = [{"tokens": 0, "seconds": 0.0} for _ in range(rows)]
    by_rank, busy = {}, {}
    for _, r in sorted(tasks.results.items()):  # fixed order
        weight = (r.stop - r.start) / n_items
        scores[r.row, r.start:r.stop] = r.scores
        for key, value in r.stats.items():
            if key in ("tokens", "seconds"):
                stats[r.row][key] += value
            elif isinstance(value, (int, float)) and value is not None:
                stats[r.row][key] = stats[r.row].get(key, 0.0) + value * weight
        by_rank[r.rank] = by_rank.get(r.rank, 0) + 1
        busy[r.rank] = busy.get(r.rank, 0.0) + r.stats.get("seconds", 0.0)
    return RoundOutcome(scores.mean(axis=1), stats, by_rank, busy, tasks.stale)
