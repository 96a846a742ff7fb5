"""Scoring tasks on a worker's inference engine: vector -> LoraCandidate -> Score. The search
space is rebuilt from the master's record (its checksum is checked): a row means the same
adapter on every rank."""

from __future__ import annotations

import time

from essa.adapters.svd_space import SvdSpace
from essa.data import build_prompts, load_task
from essa.engines import make_engine, sampling_from_config
from essa.fitness import score_candidates
from essa.rewards import get_reward
from essa.runtime.fake import FakeEvaluator
from essa.runtime.messages import BASE, Round, Setup, Task
from essa.runtime.plan import planned_tokens_per_engine


class EngineEvaluator:
    """Owns one engine (base model loaded once), the task data and the reward."""

    def __init__(self, config):
        self.config = config
        self.task = load_task(config.task)
        self.reward = get_reward(self.task.reward)
        self.sampling = sampling_from_config(config.engine)
        self.engine = make_engine(config.model, config.engine, config.adapter,
                                  planned_tokens=planned_tokens_per_engine(config))
        self.engine_description = self.engine.describe()
        # candidates the engine runs in one pass for about the cost of one (docs/runtime.md)
        self.tasks_per_pass = self.engine.candidates_per_pass
        self._prompts: dict[str, list[str]] = {}
        self.space, self.checksum = None, ""

    def prepare(self, setup: Setup) -> None:
        self.space = SvdSpace.from_record(setup.space_record)
        self.checksum = self.space.checksum

    def _prompt_list(self, split: str) -> list[str]:
        """Prompts of a whole split, built once (the chat template is not free)."""
        if split not in self._prompts:
            self._prompts[split] = build_prompts(self.engine.tokenizer, self.task.split(split),
                                                 self.task.instruction, self.config.model.chat_template)
        return self._prompts[split]

    def score(self, rnd: Round, task: Task):
        """The Score (fitness of each item, and stats) of the task under its row's candidate."""
        return self.score_pass(rnd, [task])[0]

    def score_pass(self, rnd: Round, tasks: list[Task]):
        """Several tasks on the same items in one engine pass (every candidate answers every
        prompt); one Score per task (seconds: its share of the pass)."""
        t0 = time.time()
        ids = [int(i) for i in rnd.item_ids[tasks[0].start:tasks[0].stop]]
        split, all_prompts = self.task.split(rnd.split), self._prompt_list(rnd.split)
        examples, prompts = [split[i] for i in ids], [all_prompts[i] for i in ids]
        candidates = [None if rnd.labels[t.row] == BASE  # None: the base model
                      else self.space.candidate(t.vector, f"g{rnd.generation}-{rnd.labels[t.row]}")
                      for t in tasks]
        scores = score_candidates(self.engine, candidates, examples, prompts, self.reward, rnd.kind,
                                  self.sampling, self.config.fitness.hybrid_weight)
        for score in scores:
            score.seconds = round((time.time() - t0) / len(tasks), 3)
        return scores

    def close(self) -> None:
        self.engine.close()


def make_evaluator(config):
    """The evaluator named by ``runtime.evaluator`` (the fake one needs no model)."""
    return FakeEvaluator(config) if config.runtime.evaluator == "fake" else EngineEvaluator(config)
