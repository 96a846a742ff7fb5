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
        from essa.runtime.plan import planned_tokens_per_engine
        self.engine = make_engine(config.model, config.engine, config.adapter,
                                  planned_tokens=planned_tokens_per_engine(config))
        self.engine_description = self.engine.describe()
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

    @property
    def tasks_per_pass(self) -> int:
        """Candidates the engine runs in one pass for about the cost of one (vLLM adapter mode:
        engine.max_loras; merged mode: 1)."""
        return max(1, int(getattr(self.engine, "candidates_per_pass", 1)))

    def score(self, rnd: Round, task: Task) -> tuple[list[float], dict]:
        """Fitness of each of the task's items under its row's candidate, and stats."""
        return self.score_pass(rnd, [task])[0]

    def score_pass(self, rnd: Round, tasks: list[Task]) -> list[tuple[list[float], dict]]:
        """Several tasks on the same items in one engine pass (every candidate answers every
        prompt); per task, the fitness of each item and stats (seconds: its share of the pass)."""
        from essa.fitness import score_candidates
        t0 = time.time()
        first = tasks[0]
        ids = [int(i) for i in rnd.item_ids[first.start:first.stop]]
        split = self.task.split(rnd.split)
        examples = [split[i] for i in ids]
        prompts = [self._prompt_list(rnd.split)[i] for i in ids]
        results = score_candidates(self.engine, [self.candidate(rnd, t) for t in tasks], examples,
                                   prompts, self.reward, rnd.kind, self.sampling,
                                   self.config.fitness.hybrid_weight)
        seconds = round((time.time() - t0) / len(tasks), 3)
        return [(r.item_scores, {"accuracy": r.accuracy, "loglik": r.loglik, "tokens": r.tokens,
                                 "seconds": seconds}) for r in results]

    def close(self) -> None:
        self.engine.close()


def make_evaluator(config):
    """The evaluator named by ``runtime.evaluator`` (the fake one needs no model)."""
    if config.runtime.evaluator == "fake":
        from essa.runtime.fake import FakeEvaluator
        return FakeEvaluator(config)
    return EngineEvaluator(config)
