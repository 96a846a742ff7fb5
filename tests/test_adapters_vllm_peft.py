"""One materialized candidate, two loaders: peft (transformers) and vLLM give the same greedy tokens."""

import torch

from essa.adapters.svd_space import SvdSpace
from essa.engines.base import SamplingSettings

PROMPTS = [f"<|im_start|>user\nWhat is {a} plus {b}?<|im_end|>\n<|im_start|>assistant\n"
           for a, b in [(3, 4), (15, 27), (40, 2)]]


def test_peft_and_vllm_agree_on_a_materialized_candidate(demo_model, small_adapter, vllm_lora_engine, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    space = SvdSpace.from_folder(small_adapter)
    vector = space.start_vector() * 2.5  # a candidate far enough from the start to change text
    folder = tmp_path / "candidate"
    space.write_candidate(vector, folder)

    tok = AutoTokenizer.from_pretrained(demo_model)
    base = AutoModelForCausalLM.from_pretrained(demo_model, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, folder).eval()
    peft_tokens = []
    for prompt in PROMPTS:
        ids = tok(prompt, return_tensors="pt", add_special_tokens=False)
        with torch.no_grad():
            out = model.generate(**ids, max_new_tokens=8, do_sample=False)
        peft_tokens.append(out[0, ids["input_ids"].shape[1]:].tolist())

    adapter_mode = vllm_lora_engine.adapter_mode  # one candidate: the hybrid engine would merge it
    outs = adapter_mode.generate(PROMPTS, [folder], SamplingSettings(max_tokens=8))[0]
    vllm_tokens = [tok(c[0].text, add_special_tokens=False)["input_ids"] for c in outs]
    # The candidate must matter, and both loaders must read it the same way.
    base_outs = vllm_lora_engine.generate(PROMPTS, [None], SamplingSettings(max_tokens=8))[0]
    assert [c[0].text for c in base_outs] != [c[0].text for c in outs]
    # Greedy tokens: bf16 vLLM against float32 peft can flip a near-tie, not a misread adapter.
    agree = sum(p[:4] == v[:4] for p, v in zip(peft_tokens, vllm_tokens))
    assert agree >= len(PROMPTS) - 1, (peft_tokens, vllm_tokens)
    # Log-likelihoods of peft's own greedy continuations, no ties involved: vLLM with the adapter
    # agrees with peft to bf16 precision, and far better than the base model does.
    texts = [tok.decode(t) for t in peft_tokens]
    peft_logprob = []
    for prompt, tokens in zip(PROMPTS, peft_tokens):
        ids = tok(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"]
        full = torch.cat([ids, torch.tensor([tokens])], 1)
        with torch.no_grad():
            logits = model(full).logits[0, ids.shape[1] - 1:-1].log_softmax(-1)
        peft_logprob.append(float(logits.gather(1, torch.tensor(tokens)[:, None]).sum()))
    with_adapter, base = adapter_mode.score_continuations(PROMPTS, texts, [folder, None])
    for p, a, b in zip(peft_logprob, with_adapter, base):
        assert abs(a.logprob - p) < 0.15 + 0.05 * abs(p), (peft_logprob, with_adapter)
    assert sum(abs(b.logprob - p) for p, b in zip(peft_logprob, base)) > \
        3 * sum(abs(a.logprob - p) for p, a in zip(peft_logprob, with_adapter))
