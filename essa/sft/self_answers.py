"""SFT targets for tasks without reference answers: the base model's own answers that pass.

``sft.source: self`` (rejection-sampling fine-tuning): the base model answers each of the first
``sft.self_prompts`` training prompts ``sft.self_samples`` times at ``sft.self_temperature``; the
task's reward scores every answer, and a prompt's first answer that scores 1.0 becomes its
reference solution. The warm start then imitates the model's own best behaviour, so its singular
values span directions that matter for the task (a random adapter's do not: benchmarks/RESULTS.md,
"IFEval warm starts"), and the start is no worse than the base model.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor

from essa.data import build_prompts
from essa.data.example import Example
from essa.engines import make_engine
from essa.engines.base import Completion, SamplingSettings
from essa.engines.factory import stop_rule_for
from essa.evaluation.evaluate import score_completions
from essa.rewards import get_reward

log = logging.getLogger("essa")


def self_verified_examples(config, task, examples: list[Example], engine=None) -> list[Example]:
    """``examples`` that got a passing answer from the base model, with that answer as solution.

    Generates with the run's engine settings (``engine.max_tokens``, its backend; ``engine``: an
    engine already started on the base model, else one is started and closed here), scores with
    ``task.reward`` and ``task.reward_options``. Raises ValueError when no answer passes.
    """
    sft = config.sft
    t0 = time.time()
    sampling = SamplingSettings(max_tokens=config.engine.max_tokens, temperature=sft.self_temperature,
                                top_p=config.engine.top_p, n=sft.self_samples, seed=config.seed,
                                stop_rule=stop_rule_for(config.engine, task.reward, config.task.reward_options))
    if engine is None:
        # In a child process: a closed vLLM engine does not give its memory back, and the run's
        # own engine starts in this process next.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(1, mp_context=context) as pool:
            completions = pool.submit(_sample, config, task.instruction, examples, sampling).result()
    else:
        completions = _sample(config, task.instruction, examples, sampling, engine)
    reward = get_reward(task.reward, **config.task.reward_options)
    scores = score_completions(reward, completions, examples)
    kept = []
    for example, answers, answer_scores in zip(examples, completions, scores):
        passing = [a.text for a, s in zip(answers, answer_scores) if s >= 1.0]
        if passing:
            kept.append(dataclasses.replace(example, solution=passing[0]))
    samples = sum(len(s) for s in scores)
    passed = sum(s >= 1.0 for item in scores for s in item)
    log.info("sft.source self: %d of %d sampled answers pass the %s reward; %d of %d prompts kept "
             "(%.0f s)", passed, samples, task.reward, len(kept), len(examples), time.time() - t0)
    if not kept:
        raise ValueError(f"sft.source self: none of the base model's {samples} answers to {len(examples)} "
                         f"prompts scores 1.0 with the {task.reward!r} reward; raise sft.self_samples "
                         f"or sft.self_prompts, or use adapter.init: fresh")
    return kept


def _sample(config, instruction: str, examples: list[Example], sampling: SamplingSettings,
            engine=None) -> list[list[Completion]]:
    """Completions [prompt][sample] of the base model (an engine is started and closed here
    unless one is given)."""
    own = engine is None
    if own:
        planned = len(examples) * sampling.n * sampling.max_tokens
        engine = make_engine(config.model, config.engine, config.adapter, planned_tokens=planned)
    try:
        prompts = build_prompts(engine.tokenizer, examples, instruction, config.model.chat_template)
        return engine.generate(prompts, [None], sampling)[0]
    finally:
        if own:
            engine.close()
