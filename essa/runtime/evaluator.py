"""Scoring one task on a worker's inference engine: vector -> LoRA tensors -> fitness.

The worker rebuilds the search space from the master's record (the adapter's sha256 is checked),
so a row of the round means the same adapter on every rank.
"""

from __future__ import annotations

import time

from essa.runtime.messages import BASE, Round, Setup, Task


class EngineEvaluator:
    """Owns one engine (base model loaded once), the task data and the reward."""

    def __init__(self, config):
        from essa.data import load_task
        from essa.engines import make_engine, sampling_from_config
        from essa.rewards import get_reward

        self.config = config
        self.task = load_task(config.task)
        self.reward = get_reward(self.task.reward)
        self.sampling = sampling_from_config(config.engine)
        self.engine = make_engine(config.model, config.engine, config.adapter)
        self._prompts: dict[str, list[str]] = {}
        self.space = None
        self.relative = True
        self.checksum = ""

    def prepare(self, setup: Setup) -> None:
        from essa.adapters.svd_space import SvdSpace
        self.space = SvdSpace.from_record(setup.space_record)
        self.relative = setup.relative
        self.checksum = self.space.checksum

    def _prompt_list(self, split: str) -> list[str]:
        """Prompts of a whole split, built once (the chat template is not free)."""
        if split not in self._prompts:
            from essa.data import build_prompts
            self._prompts[split] = build_prompts(self.engine.tokenizer, self.task.split(split),
                                                 self.task.instruction, self.config.model.chat_template)
        return self._prompts[split]

    def candidate(self, rnd: Round, task: Task):
        """None for the base model, else a LoraCandidate with fresh tensors."""
        from essa.engines.base import LoraCandidate
        row = task.row
        if rnd.labels[row] == BASE:
            return None
        x = task.vector
        s = self.space.vector_from_relative(x) if self.relative else x
        return LoraCandidate(self.space.materialize(s), dict(self.space.adapter.config),
                             name=f"g{rnd.generation}-{rnd.labels[row]}")

    def score(self, rnd: Round, task: Task) -> tuple[list[float], dict]:
        """Fitness of each of the task's items under its row's candidate, and stats."""
        from essa.fitness import score_candidates
        t0 = time.time()
        ids = [int(i) for i in rnd.item_ids[task.start:task.stop]]
        split = self.task.split(rnd.split)
        examples = [split[i] for i in ids]
        prompts = [self._prompt_list(rnd.split)[i] for i in ids]
        (result,) = score_candidates(self.engine, [self.candidate(rnd, task)], examples, prompts,
                                     self.reward, rnd.kind, self.sampling,
                                     self.config.fitness.hybrid_weight)
        return result.item_scores, {"accuracy": result.accuracy, "loglik": result.loglik,
                                "tokens": result.tokens, "seconds": round(time.time() - t0, 3)}

    def close(self) -> None:
        self.engine.close()


def make_evaluator(config):
    """The evaluator named by ``runtime.evaluator`` (the fake one needs no model)."""
    if config.runtime.evaluator == "fake":
        from essa.runtime.fake import FakeEvaluator
        return FakeEvaluator(config)
    return EngineEvaluator(config)
