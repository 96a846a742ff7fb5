"""The worker's loop: load the engine, rebuild the search space, then score tasks until Stop.

An evaluator's ``score(round, task)`` returns the fitness of each of the task's items (or one
number for all) and a stats dict. Any exception becomes a :class:`Failure` message naming this rank, the candidate and the cause,
so the master can stop the job with a useful message instead of hanging.
"""

from __future__ import annotations

import socket
import traceback

import numpy as np

from essa.runtime.messages import Failure, Hello, Result, Round, Setup, Stop, Task


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
    transport.send(Hello(rank, evaluator.checksum, socket.gethostname()))
    status = _serve(transport, evaluator, rank)
    evaluator.close()
    transport.flush()
    return status


def _serve(transport, evaluator, rank: int) -> int:
    current: Round | None = None
    while True:
        msg = transport.recv()
        if isinstance(msg, Stop):
            return 0
        if isinstance(msg, Round):
            current = msg
        elif isinstance(msg, Task):
            try:
                scores, stats = evaluator.score(current, msg)
                scores = per_item_scores(scores, msg.stop - msg.start)
            except Exception as exc:  # noqa: BLE001
                transport.send(Failure(rank, msg.generation, msg.row, _cause(exc)))
                continue  # the master stops the job; keep listening for its Stop
            transport.send(Result(msg.round_id, msg.generation, msg.row, msg.start, msg.stop,
                                  rank, scores, stats))


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
