"""A deterministic stand-in evaluator (``runtime.evaluator: fake``): no model, no engine.

It exists to test and benchmark the runtime itself (scheduling, faults, resume). The fitness of a
row is a pure function of the vector and the item ids, the same on every rank:

    q(x) = exp(-10 * mean((x - t)^2)),  t_j = 0.1 * sin(j)      (peak 1 at x = t)
    per item i: q(x) * (1 - 0.01 * (i mod 3)), returned per item (the master takes the mean).

Fault injection for tests, from the environment: ``ESSA_FAKE_FAULT=<what>:<generation>:<row>``
with what = raise (an exception), exit (the process dies), nan (a non-finite fitness) or hang.
``ESSA_FAKE_PASS=K`` makes it score up to K tasks per "engine pass" (one sleep for all), like
vLLM's adapter mode.
"""

from __future__ import annotations

import os
import time

import numpy as np

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
        from essa.adapters.svd_space import SvdSpace
        self.checksum = SvdSpace.from_record(setup.space_record).checksum  # same check as the real one

    def _inject(self, rnd: Round, task: Task) -> bool:
        """Apply ESSA_FAKE_FAULT if it names this task; True means 'return NaN'."""
        if not self.fault:
            return False
        what, gen, row = self.fault.split(":")
        if (int(gen), int(row)) != (rnd.generation, task.row) or not rnd.labels[task.row].startswith("c"):
            return False
        if what == "raise":
            raise RuntimeError(f"injected fault in candidate {task.row}")
        if what == "exit":
            os._exit(9)
        if what == "hang":
            time.sleep(3600)
        return what == "nan"

    def score_pass(self, rnd: Round, tasks: list[Task]) -> list[tuple[np.ndarray | float, dict]]:
        """Several tasks for the time of one."""
        if self.delay:
            time.sleep(self.delay)
        return [self._score(rnd, t) for t in tasks]

    def score(self, rnd: Round, task: Task) -> tuple[np.ndarray | float, dict]:
        return self.score_pass(rnd, [task])[0]

    def _score(self, rnd: Round, task: Task) -> tuple[np.ndarray | float, dict]:
        if self._inject(rnd, task):
            return float("nan"), {"tokens": 0, "seconds": self.delay}
        ids = np.asarray(rnd.item_ids[task.start:task.stop])
        x = np.zeros_like(task.vector) if rnd.labels[task.row] == BASE else task.vector
        per_item = fake_quality(x) * (1.0 - 0.01 * (ids % 3))
        return per_item, {"tokens": int(ids.size), "seconds": self.delay}

    def close(self) -> None:
        pass
