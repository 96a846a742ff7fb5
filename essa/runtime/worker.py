"""The worker's loop: load the engine, rebuild the search space, then score tasks until Stop.

An evaluator's ``score(round, task)`` returns the fitness of each of the task's items (or one
number for all) and a stats dict. An evaluator whose engine runs several candidates in one pass
has ``tasks_per_pass`` > 1 and ``score_pass(round, tasks)``: the worker then scores the tasks
already waiting for the same prompts together. Any exception becomes a :class:`Failure` message
naming this rank, the candidate and the cause, so the master can stop the job with a useful
message instead of hanging.
"""

from __future__ import annotations

import logging
import socket
import traceback
from collections import deque

import numpy as np

from essa.runtime.messages import Failure, Hello, Result, Round, Setup, Stop, Task

log = logging.getLogger("essa")


def _cause(exc: BaseException) -> str:
    """The exception and the innermost frame it came from, in one line."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" at {frames[-1].filename}:{frames[-1].lineno}" if frames else ""
    return f"{type(exc).__name__}: {exc}{where}"


def run_worker(transport, make_evaluator) -> int:
    """Serve the master until it sends Stop; returns the process exit status for this rank."""
    rank = transport.rank
    try:
        evaluator = make_evaluator()
        setup = transport.recv()
        while not isinstance(setup, (Setup, Stop)):  # nothing else can come before Setup
            setup = transport.recv()
        if isinstance(setup, Stop):
            evaluator.close()
            return 0
        evaluator.prepare(setup)
    except Exception as exc:  # noqa: BLE001 - reported to the master, which stops the job
        transport.send(Failure(rank, -1, -1, f"start-up failed: {_cause(exc)}"))
        transport.flush()
        return 1
    transport.send(Hello(rank, evaluator.checksum, socket.gethostname(), _tasks_per_pass(evaluator),
                         getattr(evaluator, "engine_description", "")))
    status = _serve(transport, evaluator, rank)
    evaluator.close()
    transport.flush()
    return status


def _serve(transport, evaluator, rank: int) -> int:
    current: Round | None = None
    backlog: deque = deque()  # messages read ahead while gathering a pass, in arrival order
    per_pass = _tasks_per_pass(evaluator)

    def next_message(block: bool):
        if backlog:
            return backlog.popleft()
        return transport.recv() if block else transport.try_recv()

    while True:
        msg = next_message(block=True)
        if isinstance(msg, Stop):
            return 0
        if isinstance(msg, Round):
            current = msg
        elif isinstance(msg, Task):
            if _stop_waiting(transport, backlog):
                dropped = 1 + sum(isinstance(m, Task) for m in backlog)
                log.info("rank %d: stop received, %d queued task(s) dropped", rank, dropped)
                return 0
            group = [msg]
            while len(group) < per_pass:  # tasks already here that can share the engine pass
                extra = next_message(block=False)
                if extra is None:
                    break
                if not (isinstance(extra, Task) and _same_slice(extra, msg)):
                    backlog.appendleft(extra)  # keep the order of what could not join
                    break
                group.append(extra)
            _score_pass(transport, evaluator, current, group, rank)


def _stop_waiting(transport, backlog: deque) -> bool:
    """Read every message already here into ``backlog`` (keeping their order); True when a Stop is
    among them. Checked before each engine pass, so a worker whose master stopped (a signal, a
    failure elsewhere) ends after at most the pass it is in instead of running its queued tasks."""
    while (msg := transport.try_recv()) is not None:
        backlog.append(msg)
    return any(isinstance(m, Stop) for m in backlog)


def _tasks_per_pass(evaluator) -> int:
    """Tasks the evaluator scores in one engine pass (1 unless it says more)."""
    return max(1, int(getattr(evaluator, "tasks_per_pass", 1)))


def _same_slice(a: Task, b: Task) -> bool:
    return (a.round_id, a.start, a.stop) == (b.round_id, b.start, b.stop)


def _score_pass(transport, evaluator, rnd: Round, group: list[Task], rank: int) -> None:
    """Score the tasks of ``group`` (one slice of one round) in one engine pass; one Result each."""
    try:
        if len(group) == 1:
            answers = [evaluator.score(rnd, group[0])]
        else:
            answers = evaluator.score_pass(rnd, group)
        answers = [(per_item_scores(scores, t.stop - t.start), stats)
                   for t, (scores, stats) in zip(group, answers, strict=True)]
    except Exception as exc:  # noqa: BLE001
        others = f" (in one pass with candidates {[t.row for t in group]})" if len(group) > 1 else ""
        transport.send(Failure(rank, group[0].generation, group[0].row, _cause(exc) + others))
        return  # the master stops the job; keep listening for its Stop
    for t, (scores, stats) in zip(group, answers):
        transport.send(Result(t.round_id, t.generation, t.row, t.start, t.stop, rank, scores, stats))


def per_item_scores(scores, n_items: int) -> np.ndarray:
    """An evaluator's answer as (n_items,) float64: one number per item, or one for all of them;
    None and non-finite values become NaN (a failed candidate, never passed to the strategy)."""
    values = np.array([np.nan if v is None else v for v in np.atleast_1d(np.asarray(scores, dtype=object))],
                      dtype=float)
    if values.size not in (1, n_items):
        raise ValueError(f"the evaluator returned {values.size} scores for a task of {n_items} items")
    values = np.broadcast_to(values, (n_items,)).copy()
    values[~np.isfinite(values)] = np.nan
    return values
