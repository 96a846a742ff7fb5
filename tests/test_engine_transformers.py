"""The transformers engine on the real demo model: bf16 / INT8 / nf4, LoRA candidates, scoring.

Exact "mixed batch equals alone" checks run in float32: there the CPU kernels give every row the
same result whatever the batch size. In bf16 oneDNN picks kernels by batch size, so a row can
round differently in a bigger batch (like vLLM without batch invariance); bf16 is checked for
leaks between candidates with batches of the same shape instead.
"""

from __future__ import annotations

import copy
import resource

import numpy as np
import pytest
import torch

from essa.adapters.init import write_fresh_adapter
from essa.adapters.peft_io import LoraCandidate, LoraModule, peft_tensors, write_adapter
from essa.adapters.svd_space import SvdSpace
from essa.config import EngineConfig, ModelConfig
from essa.engines.base import SamplingSettings
from essa.engines.hf_engine import TransformersEngine
from essa.engines.hf_lora import BatchedLora, row_segments

pytestmark = pytest.mark.model
QUESTIONS = ["What is 7 + 5?", "Name one primary colour."]
GREEDY = SamplingSettings(max_tokens=10)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: on 2 shared cores it is several times faster than two (restored after)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_engine(model_dir, dtype="bfloat16", quantization="none", **kw) -> TransformersEngine:
    return TransformersEngine(model_dir, ModelConfig(path=str(model_dir), dtype=dtype,
                                                     quantization=quantization),
                              EngineConfig(max_model_len=512), **kw)


def chat(engine, questions=QUESTIONS) -> list[str]:
    return [engine.tokenizer.apply_chat_template([{"role": "user", "content": q}], tokenize=False,
                                                 add_generation_prompt=True) for q in questions]


def texts(outs) -> list[list[str]]:
    """[candidate][prompt] first-sample texts."""
    return [[samples[0].text for samples in per_prompt] for per_prompt in outs]


@pytest.fixture(scope="module")
def bf16(demo_model):
    engine = make_engine(demo_model)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def fp32(demo_model):
    engine = make_engine(demo_model, dtype="float32")
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def adapter(demo_model, tmp_path_factory):
    """A random rank-8 adapter big enough to change greedy outputs, and its SVD space."""
    folder = write_fresh_adapter(demo_model, tmp_path_factory.mktemp("fresh") / "adapter", rank=8,
                                 rel_norm=0.3, seed=1)
    return folder, SvdSpace.from_folder(folder)


@pytest.fixture(scope="module")
def cands(adapter):
    """Two different in-memory candidates from the same space."""
    _, space = adapter
    x0 = space.start_vector()
    x1 = x0 * np.random.default_rng(0).uniform(0.3, 1.7, x0.shape)
    return space.candidate(x0, "x0"), space.candidate(x1, "x1")


# ---- loading and quantization ------------------------------------------------------------------

def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


@pytest.mark.parametrize("quantization, layer_type, max_share", [
    ("none", "Linear", 1.01), ("int8", "Linear8bitLt", 0.75), ("int4", "Linear4bit", 0.5)])
def test_modes_load_and_generate_deterministically(demo_model, quantization, layer_type, max_share):
    rss_before = _rss_mb()
    engine = make_engine(demo_model, quantization=quantization)
    rss_delta = _rss_mb() - rss_before
    try:
        assert type(engine.model.get_submodule("model.layers.0.self_attn.q_proj")).__name__ == layer_type
        bf16_bytes = (demo_model / "model.safetensors").stat().st_size
        footprint = engine.model.get_memory_footprint()
        print(f"\n{quantization}: footprint {footprint / 2**20:.0f} MiB, RSS delta {rss_delta:.0f} MiB, "
              f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
        assert footprint < max_share * bf16_bytes
        prompts = chat(engine)
        first = engine.generate(prompts, [None], GREEDY)
        second = engine.generate(prompts, [None], GREEDY)
        assert texts(first) == texts(second)
        assert all(t.strip() for t in texts(first)[0])
        assert all(1 <= s[0].num_tokens <= GREEDY.max_tokens for s in first[0])
    finally:
        engine.close()


def test_fp8_is_a_clear_error(demo_model):
    with pytest.raises(ValueError, match="fp8.*vllm"):
        make_engine(demo_model, quantization="fp8")


def test_num_tokens_counts_eos(bf16):
    prompts = chat(bf16, ["Reply with the single word: yes"])
    out = bf16.generate(prompts, [None], SamplingSettings(max_tokens=40))[0][0][0]
    assert out.num_tokens < 40, "the demo model should stop on its own here"
    assert out.num_tokens == len(bf16.tokenizer(out.text, add_special_tokens=False)["input_ids"]) + 1


def test_sampling_is_seeded_and_honours_stop(bf16):
    prompts = chat(bf16, ["Write a sentence about the sea."])
    settings = SamplingSettings(max_tokens=12, temperature=1.0, top_p=0.9, n=3, seed=7)
    a = bf16.generate(prompts, [None], settings)
    b = bf16.generate(prompts, [None], settings)
    assert len(a[0][0]) == 3 and texts(a) == texts(b)
    assert len({s.text for s in a[0][0]}) > 1, "three samples at temperature 1 should differ"
    stopped = bf16.generate(prompts, [None], SamplingSettings(max_tokens=20, stop=[" "]))[0][0][0]
    full = bf16.generate(prompts, [None], SamplingSettings(max_tokens=20))[0][0][0]
    assert " " not in stopped.text and full.text.startswith(stopped.text)
    assert stopped.num_tokens < full.num_tokens


# ---- LoRA candidates ---------------------------------------------------------------------------

def test_candidate_changes_output_and_tensors_stay_untouched(bf16, cands):
    x0, x1 = cands
    before = {k: v.clone() for k, v in peft_tensors(x1).items()}
    outs = texts(bf16.generate(chat(bf16), [None, x0, x1], GREEDY))
    assert outs[1] != outs[0] and outs[2] != outs[0] and outs[1] != outs[2]
    assert all(torch.equal(before[k], v) for k, v in peft_tensors(x1).items())


def test_mixed_batch_equals_each_alone_fp32(fp32, cands):
    x0, x1 = cands
    prompts = chat(fp32)
    mixed = texts(fp32.generate(prompts, [x0, None, x1], GREEDY))
    alone = [texts(fp32.generate(prompts, [c], GREEDY))[0] for c in (x0, None, x1)]
    assert mixed == alone
    assert mixed[0] != mixed[1] != mixed[2]


def test_no_leak_between_candidates_bf16(bf16, cands):
    # Same batch shape each time: only the other candidate's rows change.
    x0, x1 = cands
    prompts = chat(bf16)
    with_x1 = texts(bf16.generate(prompts, [x0, x1], GREEDY))
    with_base = texts(bf16.generate(prompts, [x0, None], GREEDY))
    assert with_x1[0] == with_base[0] and with_x1[1] != with_base[1]


def test_folder_candidate_equals_same_tensors_in_memory(bf16, cands, tmp_path):
    x0, _ = cands
    folder = write_adapter(tmp_path / "x0", peft_tensors(x0), x0.config)
    prompts = chat(bf16)
    assert texts(bf16.generate(prompts, [folder], GREEDY)) == texts(bf16.generate(prompts, [x0], GREEDY))
    conts = ["The answer is 12.", "Blue."]
    a = bf16.score_continuations(prompts, conts, [str(folder)])
    b = bf16.score_continuations(prompts, conts, [x0])
    assert a == b


def test_lora_matches_peft(fp32, adapter):
    """Our hooks against peft's own LoRA layers on the same folder: logits and greedy text."""
    from peft import PeftModel
    folder, _ = adapter
    prompts = chat(fp32)
    peft_model = PeftModel.from_pretrained(copy.deepcopy(fp32.model), str(folder)).eval()
    conts = ["12", "Red"]
    ours = fp32.score_continuations(prompts, conts, [folder])[0]
    theirs = [hand_logprob(peft_model, fp32.tokenizer, p, c) for p, c in zip(prompts, conts)]
    assert [s.logprob for s in ours] == pytest.approx(theirs, abs=1e-3)
    ids = fp32.tokenizer(prompts[0], return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        out = peft_model.generate(input_ids=ids, max_new_tokens=GREEDY.max_tokens, do_sample=False)
    peft_text = fp32.tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
    assert fp32.generate(prompts[:1], [folder], GREEDY)[0][0][0].text == peft_text


# ---- continuation scores -----------------------------------------------------------------------

def hand_logprob(model, tokenizer, prompt: str, continuation: str) -> float:
    """Sum of log p(token) over the continuation: one unpadded forward, boundary by prompt length."""
    n_prompt = len(tokenizer(prompt)["input_ids"])
    ids = tokenizer(prompt + continuation, return_tensors="pt")["input_ids"]  # (1, T)
    with torch.inference_mode():
        logprobs = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)  # (T, vocab)
    targets = ids[0, n_prompt:]
    return logprobs[n_prompt - 1:-1].gather(-1, targets[:, None]).sum().item()


def test_scores_equal_hand_computation_with_padding(fp32):
    prompts = chat(fp32, ["What is 7 + 5?", "Name one primary colour, please, in one word only."])
    conts = ["7 + 5 = 12", "Red"]  # different lengths on both sides: the batch is left-padded
    scores = fp32.score_continuations(prompts, conts, [None])[0]
    expected = [hand_logprob(fp32.model, fp32.tokenizer, p, c) for p, c in zip(prompts, conts)]
    assert [s.logprob for s in scores] == pytest.approx(expected, abs=1e-3)
    assert [s.num_tokens for s in scores] == [len(fp32.tokenizer(c)["input_ids"]) for c in conts]


def test_greedy_continuation_beats_random(bf16):
    prompts = chat(bf16, ["What is 7 + 5?"])
    greedy = bf16.generate(prompts, [None], GREEDY)[0][0][0].text
    n = len(bf16.tokenizer(greedy)["input_ids"])
    rng = np.random.default_rng(0)
    noise = bf16.tokenizer.decode(rng.integers(1000, 20000, n).tolist())
    good, bad = bf16.score_continuations(prompts * 2, [greedy, noise], [None])[0]
    assert good.logprob > bad.logprob + 10
    assert good.mean_logprob > -1.0


# ---- the hook itself, on a tiny random layer stack (shapes and row groups) -----------------------

def test_batched_lora_adds_each_rows_own_delta():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 5, bias=False)).eval()
    config = {"r": 2, "lora_alpha": 4}
    layer = LoraModule("0", None, "0", 5, 6)

    def cand(name):
        a, b = torch.randn(2, 6), torch.randn(5, 2)
        return LoraCandidate({layer: (a, b)}, 2.0, config, name), 2 * b @ a

    (c1, d1), (c2, d2) = cand("c1"), cand("c2")
    lora = BatchedLora(model, [c1, None, c2])
    x = torch.randn(5, 3, 6)  # (rows, T, in)
    slots = [0, 0, 1, 2, 2]
    with torch.inference_mode(), lora.active(row_segments(slots)):
        y = model(x)
    base = model(x).detach()
    deltas = [d1, torch.zeros(5, 6), d2]
    for row, slot in enumerate(slots):
        assert torch.allclose(y[row], base[row] + x[row] @ deltas[slot].T, atol=1e-5)
    assert torch.equal(model(x), base), "hooks are removed on leaving the block"
    with pytest.raises(ValueError, match="do not fit"):
        BatchedLora(model, [LoraCandidate({layer: (torch.zeros(2, 7), torch.zeros(5, 2))}, 2.0, config)])
