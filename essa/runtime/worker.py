"""The worker's loop: load the engine, rebuild the search space, then score tasks until Stop.

An evaluator has ``score(round, task) -> Score``, and with ``tasks_per_pass`` > 1 ``score_pass(round,
tasks)`` for the tasks waiting for the same prompts. Any exception becomes a :class:`Failure`
naming this rank, the candidate and the cause, so the master stops the job instead of hanging.
"""

from __future__ import annotations

import logging
import socket
import traceback
from collections import deque

from essa.fitness import Score
from essa.runtime.messages import Failure, Hello, Result, Round, Setup, Stop, Task

log = logging.getLogger("essa")


def _cause(exc: BaseException) -> str:
    """The exception and the innermost frame it came from, in one line."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" at {frames[-1].filename}:{frames[-1].lineno}" if frames else ""
    return f"{type(exc).__name__}: {exc}{where}"


def run_worker(transport, make_evaluator) -> int:
    """Serve the master until it sends Stop; returns the process exit status for this rank."""
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
        transport.send(Failure(transport.rank, -1, -1, f"start-up failed: {_cause(exc)}"))
        transport.flush()
        return 1
    per_pass = max(1, int(getattr(evaluator, "tasks_per_pass", 1)))
    transport.send(Hello(transport.rank, evaluator.checksum, socket.gethostname(), per_pass,
                         getattr(evaluator, "engine_description", "")))
    _serve(transport, evaluator, per_pass)
    evaluator.close()
    transport.flush()
    return 0


def _serve(transport, evaluator, per_pass: int) -> None:
    current: Round | None = None
    backlog: deque = deque()  # messages read ahead, in arrival order
    while True:
        msg = backlog.popleft() if backlog else transport.recv()
        if isinstance(msg, Stop):
            return
        if isinstance(msg, Round):
            current = msg
        elif isinstance(msg, Task):
            # Read what has arrived before each engine pass: a worker whose master stopped (a
            # signal, a failure elsewhere) ends after the pass it is in, dropping its queued tasks.
            while (extra := transport.try_recv()) is not None:
                backlog.append(extra)
            if any(isinstance(m, Stop) for m in backlog):
                dropped = 1 + sum(isinstance(m, Task) for m in backlog)
                log.info("rank %d: stop received, %d queued task(s) dropped", transport.rank, dropped)
                return
            group = [msg]  # with the tasks already here that can share the engine pass
            while len(group) < per_pass and backlog and _same_slice(backlog[0], msg):
                group.append(backlog.popleft())
            _score_pass(transport, evaluator, current, group)


def _same_slice(a, b: Task) -> bool:
    return isinstance(a, Task) and (a.round_id, a.start, a.stop) == (b.round_id, b.start, b.stop)


def _score_pass(transport, evaluator, rnd: Round, group: list[Task]) -> None:
    """Score the tasks of ``group`` (one slice of one round) in one engine pass; one Result each."""
    try:
        scores = [evaluator.score(rnd, group[0])] if len(group) == 1 else evaluator.score_pass(rnd, group)
        for t, score in zip(group, scores, strict=True):
            check_score(score, t.stop - t.start)
    except Exception as exc:  # noqa: BLE001
        others = f" (in one pass with candidates {[t.row for t in group]})" if len(group) > 1 else ""
        transport.send(Failure(transport.rank, group[0].generation, group[0].row, _cause(exc) + others))
        return  # the master stops the job; keep listening for its Stop
    for t, score in zip(group, scores):
        transport.send(Result(t.round_id, t.generation, t.row, t.start, t.stop, transport.rank, score))


def check_score(score: Score, n_items: int) -> None:
    """An evaluator's answer must be a Score with one value per item of its task."""
    if not isinstance(score, Score):
        raise TypeError(f"the evaluator returned {type(score).__name__}, not a Score")
    if score.items.size != n_items:
        raise ValueError(f"the evaluator returned {score.items.size} scores for a task of {n_items} items")
