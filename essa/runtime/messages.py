"""The messages between master and workers: small typed records carrying the round they belong to.

A *round* is one batch of evaluations: the candidates of a generation on its mini-batch, or a few
vectors on validation / test items. Its small description goes once to every worker; then each
task carries its own row's vector to the one worker that scores it (docs/runtime.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from essa.fitness import Score

BASE = "base"  # row label meaning "no adapter": the base model


@dataclass
class Setup:
    """master -> workers, once: the search space to rebuild (``SvdSpace.record()``)."""

    space_record: dict


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
    """master -> workers: rows ``labels`` (BASE: the base model) scored with fitness ``kind`` on
    ``split`` items ``item_ids`` (b,); the vectors go with the tasks."""

    round_id: int
    generation: int
    labels: list[str]
    split: str
    item_ids: np.ndarray
    kind: str


@dataclass
class Task:
    """master -> worker: score row ``row`` of round ``round_id``, its ``vector`` (d,) float64 in
    search coordinates, on items [start, stop)."""

    round_id: int
    generation: int
    row: int
    start: int
    stop: int
    vector: np.ndarray


@dataclass
class Result:
    """worker -> master: the Score of row ``row`` on items [start, stop), per item (NaN or inf:
    could not be scored), so the master joins a row's slices in item order however it was cut."""

    round_id: int
    generation: int
    row: int
    start: int
    stop: int
    rank: int
    score: Score


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
