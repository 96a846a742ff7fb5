"""A deterministic stand-in evaluator (``runtime.evaluator: fake``): no model, no engine.

It tests and benchmarks the runtime itself (scheduling, faults, resume). Per item i the fitness
is q(x) * (1 - 0.01 * (i mod 3)), with q below: a pure function of the vector and the item ids.

From the environment: ``ESSA_FAKE_FAULT=<what>:<generation>:<row>`` injects a fault, what = raise,
exit (the process dies), nan or hang; ``ESSA_FAKE_PASS=K`` scores up to K tasks per "engine pass"
(one sleep for all), like vLLM's adapter mode.
"""

from __future__ import annotations

import os
import time

import numpy as np

from essa.adapters.svd_space import SvdSpace
from essa.fitness import Score
from essa.runtime.messages import BASE, Round, Setup, Task  # candidates are labelled c0, c1, ...


def fake_quality(x: np.ndarray) -> float:
    """exp(-10 * mean((x - t)^2)) with t_j = 0.1 * sin(j)."""
    target = 0.1 * np.sin(np.arange(x.size))
    return float(np.exp(-10.0 * np.mean((x - target) ** 2)))


class FakeEvaluator:
    """Scores rows with :func:`fake_quality`; sleeps ``runtime.fake_delay_s`` per engine pass."""

    def __init__(self, config):
        self.delay = config.runtime.fake_delay_s
        self.fault = os.environ.get("ESSA_FAKE_FAULT", "")
        self.tasks_per_pass = int(os.environ.get("ESSA_FAKE_PASS", "1"))
        self.checksum = ""

    def prepare(self, setup: Setup) -> None:
        self.checksum = SvdSpace.from_record(setup.space_record).checksum  # same check as the real one

    def score(self, rnd: Round, task: Task) -> Score:
        return self.score_pass(rnd, [task])[0]

    def score_pass(self, rnd: Round, tasks: list[Task]) -> list[Score]:
        """Several tasks for the time of one."""
        if self.delay:
            time.sleep(self.delay)
        return [self._score(rnd, t) for t in tasks]

    def _score(self, rnd: Round, task: Task) -> Score:
        ids = np.asarray(rnd.item_ids[task.start:task.stop])
        what, gen, row = (self.fault or "none:-1:-1").split(":")
        if (int(gen), int(row)) == (rnd.generation, task.row) and rnd.labels[task.row].startswith("c"):
            if what == "raise":
                raise RuntimeError(f"injected fault in candidate {task.row}")
            if what == "exit":
                os._exit(9)
            if what == "hang":
                time.sleep(3600)
            if what == "nan":
                return Score(np.full(ids.size, np.nan), seconds=self.delay)
        x = np.zeros_like(task.vector) if rnd.labels[task.row] == BASE else task.vector
        return Score(fake_quality(x) * (1.0 - 0.01 * (ids % 3)), tokens=int(ids.size), seconds=self.delay)

    def close(self) -> None:
        pass
