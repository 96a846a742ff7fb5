"""The master's side of a round: send it once, hand out tasks dynamically, gather the results.
A worker's error ends it with :class:`WorkerFailure` (naming rank, candidate and cause), a stop
signal with :class:`Interrupted`."""

from __future__ import annotations

import logging
import time
from typing import Callable

import numpy as np

from essa.fitness import Score
from essa.runtime.messages import Failure, Hello, Result, Round, Setup, Stop
from essa.runtime.scheduler import RoundTasks, capacity, round_chunks

log = logging.getLogger("essa")


class WorkerFailure(RuntimeError):
    """A worker raised, died or hung: the job cannot go on."""


class Interrupted(Exception):
    """A stop signal arrived and the current round was abandoned."""


class Master:
    """Drives rounds over a master-side transport; remembers which workers are ready."""

    def __init__(self, transport, checksum: str, task_timeout_s: float,
                 should_abandon: Callable[[], bool] = lambda: False, min_task_items: int = 0):
        self.transport, self.checksum, self.task_timeout_s = transport, checksum, task_timeout_s
        self.min_task_items, self.should_abandon = min_task_items, should_abandon
        self.ready: list[int] = []
        self.capacity: dict[int, int] = {}  # tasks a worker may hold (scheduler.capacity)
        self.first_ready_at: float | None = None  # when the first worker said Hello
        self.engines: dict[int, str] = {}  # rank -> its engine as built (dtype, compile), for the record
        self.round: RoundTasks | None = None  # the last round's bookkeeping (results by rank, stale)
        self._round_id, self._started = 0, time.time()

    def setup(self, msg: Setup) -> None:
        self.transport.broadcast(msg)

    def run_round(self, generation: int, vectors: np.ndarray, labels: list[str], split: str,
                  item_ids: np.ndarray, kind: str, split_rows: bool = False) -> list[Score]:
        """The Score of every row of ``vectors`` (n, d) on ``item_ids``; ``split_rows``: an
        evaluation of a few vectors on many items (cut into chunks, see scheduler.py)."""
        self._round_id += 1
        rnd = Round(self._round_id, generation, labels, split, item_ids, kind)
        self.transport.broadcast(rnd)
        tasks = self.round = RoundTasks.build(rnd.round_id, generation, vectors,
                                              round_chunks(len(item_ids), split_rows,
                                                           len(self.transport.workers)),
                                              workers=len(self.transport.workers),
                                              min_items=self.min_task_items)
        while not tasks.done():
            self._dispatch(tasks)
            msg = self.transport.poll(timeout=0.05)
            if msg is not None:
                self._handle(msg, tasks, labels)
            self._check_time(tasks, labels)
            if self.should_abandon():
                raise Interrupted(f"generation {generation} abandoned")
        return tasks.row_scores(len(labels))

    def _dispatch(self, tasks: RoundTasks) -> None:
        """Send tasks while the scheduler names a worker for one."""
        while (rank := tasks.next_rank(self.ready, self.capacity)) is not None:
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
            self.capacity[msg.rank] = capacity(msg.tasks_per_pass)
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
        self.transport.broadcast(Stop(reason))
        self.transport.flush()

