"""sft.source self: the base model's own answers that the task's reward passes become the SFT
targets (real vLLM engine, real sampling; a user reward decides which answers pass)."""

import sys
import textwrap

import pytest

from essa.config import load_config
from essa.data import load_task
from essa.sft.self_answers import self_verified_examples


@pytest.fixture
def parity_reward(tmp_path, monkeypatch):
    """A user reward that passes answers of even length: about half of them, decided by the text."""
    (tmp_path / "parity_reward.py").write_text(textwrap.dedent("""
        def even(completions, answers):
            return [float(len(c) % 2 == 0) for c in completions]

        def never(completions, answers):
            return [0.0] * len(completions)
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "parity_reward"
    sys.modules.pop("parity_reward", None)


def config_for(model, reward: str, *extra: str):
    return load_config(None, [f"model.path={model}", "task.dataset=ifeval", f"task.reward={reward}",
                              "sft.source=self", "sft.self_samples=3", "sft.self_temperature=1.0",
                              "engine.max_tokens=12", *extra])


def test_each_prompt_keeps_its_first_passing_sampled_answer(vllm_engine, demo_model, parity_reward):
    config = config_for(demo_model, f"{parity_reward}:even")
    task = load_task(config.task)
    examples = task.split("train")[:10]
    kept = self_verified_examples(config, task, examples, engine=vllm_engine)
    assert 0 < len(kept) <= 10
    by_id = {e.id: e for e in examples}
    for example in kept:
        source = by_id[example.id]
        assert (example.question, example.answer) == (source.question, source.answer)
        assert example.solution and len(example.solution) % 2 == 0


def test_sampling_a_batch_whose_prefill_is_chunked_works(vllm_engine):
    """Seeded requests crash vLLM 0.32's CPU build when a prefill is chunked (it rewinds a CPU
    torch generator); the engine samples with its own generator there."""
    from essa.engines.base import SamplingSettings
    prompts = [f"Write the number {i} in words, then count from {i} to {i + 40} in words. " * 6
               for i in range(48)]  # about 48 x 180 prompt tokens: more than one prefill step
    out = vllm_engine.generate(prompts, [None], SamplingSettings(max_tokens=2, temperature=1.0, n=2, seed=3))
    assert len(out[0]) == 48 and all(len(samples) == 2 for samples in out[0])


def test_no_passing_answer_is_a_clear_error(vllm_engine, demo_model, parity_reward):
    config = config_for(demo_model, f"{parity_reward}:never")
    task = load_task(config.task)
    with pytest.raises(ValueError, match="none of the base model's 6 answers to 2 prompts scores 1.0"):
        self_verified_examples(config, task, task.split("train")[:2], engine=vllm_engine)
