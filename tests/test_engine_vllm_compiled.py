"""The real vLLM CPU engine with LoRA *and* torch.compile: our LoRA product is an opaque operator,
so the compiled graph must read each step's slot indices and each call's adapter weights at run
time (vLLM traces the model once and drops guards: anything baked in would be silently wrong)."""

import pytest

from tests.test_engine_vllm import GREEDY, PROMPTS, candidates, texts

pytest.importorskip("vllm")


def test_lora_engine_is_compiled(compiled_lora_engine):
    from vllm.config import CompilationMode
    mode = compiled_lora_engine.llm.llm_engine.vllm_config.compilation_config.mode
    assert mode != CompilationMode.NONE  # vLLM alone would have turned it off for LoRA on the CPU


@pytest.mark.parametrize("scales", [(2.0, 3.0), (2.5, 1.5)])
def test_compiled_adapter_passes_match_merged_weights(compiled_lora_engine, small_adapter, scales):
    """Base and two candidates in one compiled adapter pass against the same candidates merged
    into the weights (same compiled engine). Run twice with other candidates: the slots then
    hold new weights, which a stale cache or a traced-in copy would miss. bf16 merging rounds
    differently, so greedy text may part at a near-tie; the log-likelihoods of fixed
    continuations (no ties) must agree to rounding level."""
    engine = compiled_lora_engine
    cands = [None, *candidates(small_adapter, list(scales))]
    conts = ["3 + 4 = 7. The answer is 7.", "zebra violin carpet"]
    adapter_out = [texts(per) for per in engine.adapter_mode.generate(PROMPTS, cands, GREEDY)]
    adapter_ll = engine.adapter_mode.score_continuations(PROMPTS[:2], conts, cands)
    merged_out = [texts(per) for per in engine.merged_mode.generate(PROMPTS, cands, GREEDY)]
    merged_ll = engine.merged_mode.score_continuations(PROMPTS[:2], conts, cands)
    base = adapter_out[0]
    assert merged_out[0] == base  # no adapter: the same weights, the same compiled graph
    assert adapter_out[1] != base and adapter_out[2] != base and adapter_out[1] != adapter_out[2]
    pairs = [(a, m) for k in (1, 2) for a, m in zip(adapter_out[k], merged_out[k])]
    assert sum(a == m for a, m in pairs) >= 4, pairs
    for k in (1, 2):
        assert [s.logprob for s in adapter_ll[k]] != [s.logprob for s in adapter_ll[0]]
        for a, m in zip(adapter_ll[k], merged_ll[k]):
            assert a.logprob == pytest.approx(m.logprob, rel=0.03, abs=0.3)
    assert engine.adapter_mode.loaded_ids() == set()
