"""Scheduling policy, all of it: how a round is cut into tasks and who gets the next one.

Pure bookkeeping, no transport: the master feeds it events (a worker is ready, a result came in)
and asks it what to send to whom. The rules (queued tasks up to ``capacity``, guided cuts at the
end of a round, chunks for evaluations) are explained in docs/runtime.md; the cuts depend only on
the order of hand-outs and the number of workers, never on timing.
"""

from __future__ import annotations

import math
import time
from collections import Counter, deque
from dataclasses import dataclass, field, replace

from essa.fitness import Score
from essa.runtime.messages import Result, Task

EVAL_CHUNK = 16  # fewest items per task when a few vectors are scored on many items (evaluations)
EVAL_CHUNK_MAX = 128  # most: a batch this size already fills a CPU engine, and a stop waits for one


def split_items(n_items: int, parts: int) -> list[tuple[int, int]]:
    """[start, stop) slices covering n_items in ``parts`` nearly equal pieces (none empty)."""
    parts = max(1, min(parts, n_items))
    bounds = [round(i * n_items / parts) for i in range(parts + 1)]
    return [(bounds[i], bounds[i + 1]) for i in range(parts)]


def round_chunks(n_items: int, split_rows: bool, workers: int = 1) -> list[tuple[int, int]]:
    """The item slices of every row: all items, or (``split_rows``) chunks of EVAL_CHUNK to
    EVAL_CHUNK_MAX items, as large as still gives every worker two chunks of a row: few workers
    get large engine batches (16-item passes ran a CPU engine at a third of its speed), many
    workers a share each. A row's fitness is the mean of its per-item scores, whatever the chunks
    and ranks."""
    if not split_rows:
        return split_items(n_items, 1)
    size = min(EVAL_CHUNK_MAX, max(EVAL_CHUNK, -(-n_items // (2 * max(1, workers)))))
    return split_items(n_items, -(-n_items // size))


def capacity(tasks_per_pass: int) -> int:
    """Tasks a worker may hold at once: two engine passes' worth."""
    return 2 * max(1, tasks_per_pass)


@dataclass
class RoundTasks:
    """The tasks of one round, who holds which, and the results so far."""

    tasks: deque
    running: dict = field(default_factory=dict)  # rank -> deque of [Task, start time], head runs
    results: dict = field(default_factory=dict)  # (row, start) -> Result
    stale: int = 0   # results of another round (a late answer), dropped
    duplicate: int = 0
    workers: int = 1  # engines sharing the round (the guided cut divides the waiting items by it)
    min_items: int = 0  # smallest slice of the guided cut; 0: tasks are handed out as built
    waiting_items: int = 0

    @classmethod
    def build(cls, round_id: int, generation: int, vectors, chunks: list[tuple[int, int]],
              workers: int = 1, min_items: int = 0):
        """Every row of ``vectors`` (n, d) on every chunk, row by row."""
        tasks = deque(Task(round_id, generation, r, a, b, vectors[r])
                      for r in range(len(vectors)) for a, b in chunks)
        waiting = len(vectors) * sum(b - a for a, b in chunks)
        return cls(tasks, workers=max(1, workers), min_items=min_items, waiting_items=waiting)

    def done(self) -> bool:
        return not self.tasks and not self.running

    def held(self, rank: int) -> int:
        """Tasks sent to ``rank`` and not answered yet."""
        return len(self.running.get(rank, ()))

    def next_rank(self, ready: list[int], capacities: dict[int, int]) -> int | None:
        """The worker to send the next task to (None: keep it waiting): an idle one first; while
        more tasks wait than there are workers, the one holding fewest below its capacity."""
        if not self.tasks:
            return None
        rank = next((r for r in ready if self.held(r) == 0), None)
        if rank is None and len(self.tasks) > len(ready):
            open_ranks = [r for r in ready if self.held(r) < capacities.get(r, capacity(1))]
            rank = min(open_ranks, key=self.held, default=None)
        return rank

    def assign(self, rank: int) -> Task | None:
        """The next task for ``rank`` (None when none is left)."""
        if not self.tasks:
            return None
        task = self.tasks.popleft()
        size, items = self.slice_size(), task.stop - task.start
        if size < items and size + self.min_items <= items:  # cut; the rest waits at the head
            self.tasks.appendleft(replace(task, start=task.start + size))
            task = replace(task, stop=task.start + size)
        self.waiting_items -= task.stop - task.start
        self.running.setdefault(rank, deque()).append([task, time.time()])
        return task

    def slice_size(self) -> int:
        """Most items the next task may hold (guided self-scheduling; no cut when disabled)."""
        if self.min_items <= 0:
            return self.waiting_items
        return max(self.min_items, math.ceil(self.waiting_items / self.workers))

    def accept(self, result: Result, round_id: int) -> bool:
        """Record a result; False (and counted) when it is stale or a duplicate."""
        if result.round_id != round_id:
            self.stale += 1
            return False
        held = self.running.get(result.rank, deque())
        for entry in held:
            if (entry[0].row, entry[0].start) == (result.row, result.start):
                held.remove(entry)
                break
        if held:
            held[0][1] = time.time()  # the queued task starts running now
        else:
            self.running.pop(result.rank, None)
        key = (result.row, result.start)
        if key in self.results:
            self.duplicate += 1
            return False
        self.results[key] = result
        return True

    def overdue(self, timeout: float) -> tuple[int, Task, float] | None:
        """A (rank, task, seconds) that has run longer than ``timeout``, if any."""
        now = time.time()
        for rank, held in self.running.items():
            task, t0 = held[0]
            if now - t0 > timeout:
                return rank, task, now - t0
        return None

    def row_scores(self, rows: int) -> list[Score]:
        """Each row's Score, its slices joined in item order (a finished round)."""
        parts: list[list[Score]] = [[] for _ in range(rows)]
        for (row, _), result in sorted(self.results.items()):
            parts[row].append(result.score)
        return [Score.join(p) for p in parts]

    def tasks_by_rank(self) -> Counter:
        """Results received per rank."""
        return Counter(r.rank for r in self.results.values())
