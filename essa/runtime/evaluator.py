"""Scoring tasks on a worker's inference engine: vector -> LoraCandidate -> Score. The search
space is rebuilt from the master's record (its checksum is checked): a row means the same
adapter on every rank."""

from __future__ import annotations

import logging
import time

from essa.adapters.svd_space import SvdSpace
from essa.data import build_prompts, load_task
from essa.engines import make_engine, sampling_from_config
from essa.fitness import score_candidates
from essa.rewards import get_reward
from essa.runtime.fake import FakeEvaluator
from essa.runtime.messages import BASE, Round, Setup, Task
from essa.runtime.plan import planned_tokens_per_engine

log = logging.getLogger("essa")


class EngineEvaluator:
    """Owns one engine (base model loaded once), the task data and the reward (and with
    fitness.kind reward_model the reward model, loaded once beside the engine)."""

    def __init__(self, config):
        self.config = config
        rm = config.fitness.reward_model if config.fitness.kind == "reward_model" else None
        if rm is not None:  # a bad folder fails here in a second, not after the engine's start
            from essa.reward_model import check_reward_model
            check_reward_model(rm.path, rm.output)
        self.task = load_task(config.task)
        self.reward = get_reward(self.task.reward, **config.task.reward_options)
        # A reward model scores the generations whole: no stop rule (engine.stop_at_answer).
        self.sampling = sampling_from_config(config.engine, None if rm is not None else self.task.reward,
                                             config.task.reward_options)
        self.engine = make_engine(config.model, config.engine, config.adapter,
                                  planned_tokens=planned_tokens_per_engine(config))
        self.reward_model = None
        if rm is not None:  # after the engine, which sizes its share of the GPU at start
            from essa.reward_model.scorer import RewardModelScorer
            self.reward_model = RewardModelScorer(rm)
        self._base_rewards: dict[str, float] = {}  # item id -> base model's RM score (baseline)
        self._pass_seconds = 0.0
        self.engine_description = self.engine.describe() + (
            f"; reward model {self.reward_model.description}" if self.reward_model else "")
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
        kind, baseline = rnd.kind, None
        if self.reward_model is not None:
            # The loop's validation and final rounds come as kind accuracy: a reward-model run
            # reports the reward model's raw score there (base, start and mean comparable).
            if kind == "reward_model" and self.config.fitness.reward_model.baseline:
                baseline = self._base_rewards
            kind = "reward_model"
        scores = score_candidates(self.engine, candidates, examples, prompts, self.reward, kind,
                                  self.sampling, self.config.fitness.hybrid_weight,
                                  self.reward_model, baseline)
        self._pass_seconds += time.time() - t0
        for score in scores:
            score.seconds = round((time.time() - t0) / len(tasks), 3)
        return scores

    def close(self) -> None:
        rm = self.reward_model
        if rm is not None and rm.pairs:  # what the reward model costs beside generation
            passes = max(self._pass_seconds, 1e-9)
            log.info("reward model: %d pairs scored in %.1f s (%.1f ms per pair), %.0f%% of the "
                     "%.1f s of scoring passes; generation and the rest took %.1f s", rm.pairs,
                     rm.seconds, 1000 * rm.seconds / rm.pairs, 100 * rm.seconds / passes,
                     self._pass_seconds, self._pass_seconds - rm.seconds)
            rm.close()
        self.engine.close()


def make_evaluator(config):
    """The evaluator named by ``runtime.evaluator`` (the fake one needs no model)."""
    return FakeEvaluator(config) if config.runtime.evaluator == "fake" else EngineEvaluator(config)
