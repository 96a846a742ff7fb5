"""The real vLLM CPU engine on SmolLM2: adapter and merged modes, restore, ids, log-likelihoods."""

import pytest
import torch

from essa.adapters.svd_space import SvdSpace
from essa.engines.base import SamplingSettings
from essa.engines.vllm_engine import resolve_mode, vllm_lora_rank
from essa.engines.vllm_internals import check_version

PROMPTS = [f"<|im_start|>user\nTom has {a} apples and buys {b} more. How many apples now?<|im_end|>\n"
           f"<|im_start|>assistant\n" for a, b in [(3, 4), (12, 9), (25, 17), (8, 30)]]
GREEDY = SamplingSettings(max_tokens=12)


def candidates(adapter_folder, scales):
    """Candidates that scale every searched singular value (A and B) of the adapter."""
    space = SvdSpace.from_folder(adapter_folder)
    v0 = space.start_vector()
    return [space.candidate(v0 * s, f"x{s}") for s in scales]


def texts(per_prompt):
    return [c[0].text for c in per_prompt]


def test_mode_rules_and_rank_rounding():
    assert vllm_lora_rank(2) == 8 and vllm_lora_rank(8) == 8 and vllm_lora_rank(20) == 32
    assert resolve_mode("auto", "none", on_cpu=True, eager=True) == "hybrid"
    assert resolve_mode("auto", "none", on_cpu=True, eager=False) == "merged"
    with pytest.raises(ValueError, match="hybrid needs dense base weights"):
        resolve_mode("hybrid", "fp8", on_cpu=True)
    assert resolve_mode("auto", "none", on_cpu=True, tensor_parallel_size=2) == "adapter"
    assert resolve_mode("auto", "none", on_cpu=False) == "adapter"
    assert resolve_mode("auto", "int4", on_cpu=False) == "adapter"
    with pytest.raises(ValueError, match="tensor_parallel_size"):
        resolve_mode("merged", "none", on_cpu=False, tensor_parallel_size=2)
    with pytest.raises(ValueError, match="merged needs dense base weights"):
        resolve_mode("merged", "int4", on_cpu=False)


def test_unsupported_vllm_versions_fail_with_a_clear_message():
    check_version("0.32.0")
    check_version("0.32.4.dev1+gabc")
    for version in ("0.31.2", "0.33.0", "1.0.0", "unknown"):
        with pytest.raises(RuntimeError, match=f"vLLM {version} is installed.*vllm_internals.py"):
            check_version(version)


def test_adapter_mode_batches_candidates_without_leaking(vllm_lora_engine, small_adapter):
    """K candidates in one pass: each output equals that candidate run alone. The CPU LoRA kernels
    are not batch-invariant, so "alone" means the same pass size (its prompts repeated K times)."""
    engine = vllm_lora_engine.adapter_mode
    cands = candidates(small_adapter, [2.0, 2.5, 1.5])
    together = engine.generate(PROMPTS, [None, *cands], GREEDY)
    base = texts(together[0])
    outs = [tuple(texts(together[i])) for i in (1, 2, 3)]
    assert all(list(o) != base for o in outs) and len(set(outs)) == 3
    for i, cand in enumerate(cands, start=1):
        alone = engine.generate(PROMPTS * 4, [cand], GREEDY)[0]
        assert texts(alone)[:len(PROMPTS)] == texts(together[i])
    assert engine.loaded_ids() == set()
    assert list(engine.root.iterdir()) == []  # no adapter files left behind


def test_adapter_ids_never_repeat(vllm_lora_engine, small_adapter, monkeypatch):
    mode = vllm_lora_engine.adapter_mode
    seen = []
    original = mode.load
    monkeypatch.setattr(mode, "load", lambda c: seen.append(r := original(c)) or r)
    for _ in range(3):  # three "generations" of two candidates
        vllm_lora_engine.generate(PROMPTS[:1], candidates(small_adapter, [2.0, 3.0]), SamplingSettings(max_tokens=2))
    ids = [entry[0].lora_int_id for entry in seen]
    assert len(ids) == 6 and len(set(ids)) == 6


def test_folder_candidate_equals_in_memory_candidate(vllm_lora_engine, small_adapter, tmp_path):
    engine = vllm_lora_engine.adapter_mode
    space = SvdSpace.from_folder(small_adapter)
    vec = space.start_vector() * 4.0
    space.write_candidate(vec, tmp_path / "cand")
    in_memory = space.candidate(vec)
    out = engine.generate(PROMPTS, [tmp_path / "cand", in_memory], GREEDY)
    assert texts(out[0]) == texts(out[1])
    assert (tmp_path / "cand" / "adapter_config.json").is_file()  # a caller's folder is not deleted


def test_merged_mode_matches_adapter_mode(vllm_lora_engine, small_adapter):
    """Same candidate, two ways of applying it. bf16 merging rounds differently from the LoRA
    kernels, so an occasional late token may differ; most completions must be identical and all
    must share their first tokens."""
    cands = candidates(small_adapter, [1.0, 1.5])
    adapter_out = vllm_lora_engine.adapter_mode.generate(PROMPTS, cands, GREEDY)
    merged_out = vllm_lora_engine.merged_mode.generate(PROMPTS, cands, GREEDY)
    pairs = [(a[0].text, m[0].text) for k in range(2) for a, m in zip(adapter_out[k], merged_out[k])]
    same = sum(a == m for a, m in pairs)
    assert same >= 5, pairs
    assert all(a.split()[:2] == m.split()[:2] for a, m in pairs), pairs


def test_merged_restore_is_bit_exact(vllm_engine, small_adapter, demo_model):
    from safetensors import safe_open
    engine = vllm_engine
    before = texts(engine.generate(PROMPTS, [None], GREEDY)[0])
    strong = candidates(small_adapter, [5.0])[0]
    changed = texts(engine.generate(PROMPTS, [strong], GREEDY)[0])
    after = texts(engine.generate(PROMPTS, [None], GREEDY)[0])
    assert changed != before and after == before
    # Consecutive candidates overwrite each other's weights directly; the base in between and
    # after the call is exact again.
    other = candidates(small_adapter, [-3.0])[0]
    mixed = [texts(out) for out in engine.generate(PROMPTS, [other, strong, None, strong], GREEDY)]
    assert mixed[1] == changed and mixed[2] == before and mixed[3] == changed and mixed[0] != changed
    with safe_open(str(demo_model / "model.safetensors"), "pt") as st:
        for layer in (0, 17, 29):
            qkv = torch.cat([st.get_tensor(f"model.layers.{layer}.self_attn.{m}.weight")
                             for m in ("q_proj", "k_proj", "v_proj")])
            held = engine.merged_mode.weights.current_weight(layer, "qkv_proj")  # the engine's dtype (auto)
            assert held.dtype == engine.llm.llm_engine.model_config.dtype
            assert torch.equal(held, qkv.to(held.dtype))  # the checkpoint is bf16: exact in float32
            o = st.get_tensor(f"model.layers.{layer}.self_attn.o_proj.weight")
            assert torch.equal(engine.merged_mode.weights.current_weight(layer, "o_proj"), o.to(held.dtype))


def test_merged_mode_never_reuses_prompt_blocks_cached_under_other_weights(vllm_engine, small_adapter):
    # Prompts of several KV blocks: vLLM's prefix cache would hand a candidate the base model's
    # (or the previous candidate's) keys and values for them unless merged mode resets it.
    engine = vllm_engine
    block = engine.llm.llm_engine.vllm_config.cache_config.block_size
    facts = " ".join(f"Fact {i}: {i} is {'even' if i % 2 == 0 else 'odd'}." for i in range(block // 3))
    prompts = [f"{facts} Question: what is 3 + 4? Answer:", f"{facts} Question: name a colour. Answer:"]
    assert len(engine.tokenizer(prompts[0])["input_ids"]) > 2 * block
    strong = candidates(small_adapter, [5.0])[0]
    base = texts(engine.generate(prompts, [None], GREEDY)[0])
    after_base = texts(engine.generate(prompts, [strong], GREEDY)[0])
    engine.llm.reset_prefix_cache()
    clean = texts(engine.generate(prompts, [strong], GREEDY)[0])
    assert after_base == clean and clean != base
    assert texts(engine.generate(prompts, [None], GREEDY)[0]) == base


def test_score_continuations_prefers_the_likely_text(vllm_engine, small_adapter):
    engine = vllm_engine
    greedy = texts(engine.generate(PROMPTS[:2], [None], GREEDY)[0])
    conts = greedy + ["zebra violin carpet", "qwerty asdf"]
    scores = engine.score_continuations(PROMPTS[:2] * 2, conts, [None, *candidates(small_adapter, [5.0])])
    base = scores[0]
    assert base[0].num_tokens > 0 and base[0].logprob < 0
    assert base[0].mean_logprob > base[2].mean_logprob and base[1].mean_logprob > base[3].mean_logprob
    # Greedy tokens are the argmax at each step: under the base model they are near-certain.
    assert base[0].mean_logprob > -1.0
    assert scores[1][0].logprob != base[0].logprob  # the candidate changes the likelihood


def test_adapter_mode_log_likelihoods_agree_with_merged_mode(vllm_lora_engine, small_adapter):
    """Prompt log-probabilities with LoRA enabled on the CPU build (vLLM's own CPU ops failed on
    them): the base model's equal those of a LoRA-free pass exactly, a candidate's agree with
    merged mode to bf16 rounding."""
    conts = ["3 + 4 = 7. The answer is 7.", "zebra violin carpet"]
    cands = [None, *candidates(small_adapter, [3.0])]
    merged = vllm_lora_engine.merged_mode.score_continuations(PROMPTS[:2], conts, cands)
    adapter = vllm_lora_engine.adapter_mode.score_continuations(PROMPTS[:2], conts, cands)
    for m, a in zip(merged[0], adapter[0]):
        assert a.num_tokens == m.num_tokens and a.logprob == pytest.approx(m.logprob, rel=1e-6)
    assert [s.logprob for s in adapter[1]] != [s.logprob for s in adapter[0]]
    for m, a in zip(merged[1], adapter[1]):
        assert a.logprob == pytest.approx(m.logprob, rel=0.03, abs=0.3)


def test_hybrid_mode_runs_one_candidate_merged_and_several_as_adapters(vllm_lora_engine, small_adapter,
                                                                       monkeypatch):
    engine = vllm_lora_engine
    used = []
    for name in ("adapter", "merged"):
        mode = getattr(engine, f"{name}_mode")
        monkeypatch.setattr(mode, "run", lambda *a, name=name, run=mode.run: used.append(name) or run(*a))
    cands = candidates(small_adapter, [2.0, 2.5])
    assert engine.candidates_per_pass == engine.adapter_mode.max_loras == 4
    one = engine.generate(PROMPTS[:2], cands[:1], GREEDY)
    two = engine.generate(PROMPTS[:2], cands, GREEDY)
    assert used == ["merged", "adapter"]
    assert len(one) == 1 and len(two) == 2 and all(len(per) == 2 for per in two)
