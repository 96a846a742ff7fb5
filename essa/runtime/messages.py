"""The messages between master and workers: small typed records carrying the round they belong to.

A *round* is one batch of evaluations the master hands out: the candidates of a generation on the
generation's mini-batch, or a few vectors on validation / test items. The master sends the round's
small description once to every worker, then hands out tasks one at a time, each carrying its own
row's vector and a slice of the round's items; a worker that sends a result is idle and gets the
next task. Sending each vector only to the worker that scores it keeps the bytes per generation at
popsize x d, whatever the number of ranks (a broadcast of the whole matrix grows with the ranks).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

BASE = "base"  # row label meaning "no adapter": the base model


@dataclass
class Setup:
    """master -> workers, once: the search space to rebuild (SvdSpace.record()) and how to read rows."""

    space_record: dict
    relative: bool


@dataclass
class Hello:
    """worker -> master, once: the worker is ready; the checksum proves it rebuilt the same space."""

    rank: int
    checksum: str
    host: str = ""
    tasks_per_pass: int = 1  # tasks of one slice the worker scores in one engine pass
    engine: str = ""  # the engine as it was built: backend, dtype, compiled or eager (and why)


@dataclass
class Round:
    """master -> workers: what one round scores, sent once per worker (the vectors go with the tasks).

    ``labels[i] == BASE`` means row i is the base model (its vector is ignored). ``kind``: a
    fitness kind (accuracy / loglik / hybrid), scored on ``split`` items ``item_ids``.
    """

    round_id: int
    generation: int
    labels: list[str]
    split: str
    item_ids: np.ndarray  # (b,)
    kind: str


@dataclass
class Task:
    """master -> worker: score row ``row`` of round ``round_id`` on items [start, stop).

    ``vector`` (d,) float64 in search coordinates is that row's candidate.
    """

    round_id: int
    generation: int
    row: int
    start: int
    stop: int
    vector: np.ndarray


@dataclass
class Result:
    """worker -> master: the fitness of each item of a task (NaN: could not be scored) and stats.

    ``scores`` (stop - start,) per item, so the master can take a row's mean over all its items in
    one fixed order however the row was cut into tasks; a single number stands for every item.
    """

    round_id: int
    generation: int
    row: int
    start: int
    stop: int
    rank: int
    scores: np.ndarray | float
    stats: dict = field(default_factory=dict)  # accuracy, loglik, tokens, seconds


@dataclass
class Failure:
    """worker -> master: the worker cannot go on (``row`` is -1 when no task was running)."""

    rank: int
    generation: int
    row: int
    cause: str


@dataclass
class Stop:
    """master -> workers: close the engine and exit."""

    reason: str = "done"
