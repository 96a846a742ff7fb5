"""Fitness kinds on the demo task with the real vLLM engine and the real arithmetic reward."""

import dataclasses

import numpy as np
import pytest

from essa.adapters.svd_space import SvdSpace
from essa.config import RunConfig
from essa.data import build_prompts, load_task
from essa.engines.base import SamplingSettings
from essa.fitness import score_candidates
from essa.rewards import get_reward


@pytest.fixture(scope="module")
def demo_batch(vllm_engine):
    task = load_task(RunConfig().task)
    examples = task.split("train")[:6]
    prompts = build_prompts(vllm_engine.tokenizer, examples, task.instruction)
    return task, examples, prompts


def test_each_fitness_kind_on_the_demo_task(vllm_engine, demo_batch, small_adapter):
    task, examples, prompts = demo_batch
    space = SvdSpace.from_folder(small_adapter)
    cands = [None, space.candidate(space.start_vector() * 2.0)]
    reward, sampling = get_reward(task.reward), SamplingSettings(max_tokens=40)
    acc = score_candidates(vllm_engine, cands, examples, prompts, reward, "accuracy", sampling)
    ll = score_candidates(vllm_engine, cands, examples, prompts, reward, "loglik", sampling)
    hy = score_candidates(vllm_engine, cands, examples, prompts, reward, "hybrid", sampling, 0.5)
    for a, l, h in zip(acc, ll, hy):
        assert 0.0 <= a.fitness <= 1.0 and a.loglik is None and a.tokens > 0
        assert l.fitness < 0 and l.accuracy is None
        assert h.fitness == pytest.approx(h.accuracy + 0.5 * h.loglik)
        for c in (a, l, h):  # per-prompt scores, whose mean is the fitness (the runtime's sum)
            assert len(c.items) == len(examples) and c.fitness == pytest.approx(np.mean(c.items))
        assert h.accuracy == a.accuracy and h.loglik == pytest.approx(l.fitness, abs=1e-6)
    # The accuracy fitness is the reward of the generated texts: recompute it independently.
    texts = [c[0].text for c in vllm_engine.generate(prompts, [None], sampling)[0]]
    assert acc[0].fitness == sum(reward(texts, [e.answer for e in examples])) / len(examples)
    assert ll[0].fitness != ll[1].fitness  # the candidate changes the likelihood


def test_loglik_prefers_the_true_solution(vllm_engine, demo_batch):
    task, examples, prompts = demo_batch
    wrong = [dataclasses.replace(e, solution=e.solution.replace(f"#### {e.answer}",
                                                                f"#### {int(e.answer) + 7}"))
             for e in examples]
    reward, sampling = get_reward(task.reward), SamplingSettings()
    true_ll = score_candidates(vllm_engine, [None], examples, prompts, reward, "loglik", sampling)[0]
    wrong_ll = score_candidates(vllm_engine, [None], wrong, prompts, reward, "loglik", sampling)[0]
    assert true_ll.fitness > wrong_ll.fitness


def test_loglik_without_solutions_is_a_clear_error(vllm_engine, demo_batch):
    task, examples, prompts = demo_batch
    bare = [dataclasses.replace(e, solution="") for e in examples]
    with pytest.raises(ValueError, match="needs reference solutions"):
        score_candidates(vllm_engine, [None], bare, prompts, get_reward("arithmetic"), "loglik",
                         SamplingSettings())
