"""The transformers engine (``essa/engines/hf_engine.py``) with batched LoRA candidates on a GPU.

Built for a device with no model download: the script makes its own random Llama (SmolLM2-135M's
layer shapes by default, but a 512-token byte-level BPE tokenizer trained here on a few sentences,
and random weights) in a temp folder, then for each mode
(fp32, bf16, bitsandbytes int8 and nf4 when bitsandbytes imports) checks and measures:

1. candidates: K random LoRA candidates (``LoraCandidate``: A/B per module in memory) in ONE
   ``generate`` call against each candidate alone (greedy token ids). This must hold exactly in
   fp32; in bf16/int8/int4 a different batch size may pick other kernels and round differently,
   so there it is reported, not required. Required in every mode: no leak (candidate 1's rows are
   the same whether the other rows carry candidate 2 or the base, same batch shape) and the base
   output differs from a strongly perturbed candidate's.
2. peft (fp32 and bf16): ``score_continuations`` under a candidate against peft's ``PeftModel``
   forward with the same adapter written as a PEFT folder, on the same device (sum log-prob per
   item; fp32 to 1e-3 per token, bf16 to 0.05 per token, bf16 rounding of a left-padded batch).
3. speed: greedy tokens/s (generated tokens that count, eos included, over wall time) for the base
   alone and for K candidates at once, each on ``--prompts`` prompts (median of ``--repeats``);
   CUDA memory after loading, and peak ``torch.cuda.max_memory_allocated`` over the timed runs.

Exits 1 when a required check fails, naming it. Command (repo root; $OUT is where JSON goes):

    PYTHONUNBUFFERED=1 python3 benchmarks/hf_engine_gpu.py --json $OUT/hf_gpu.json
    PYTHONPATH=. .venv/bin/python benchmarks/hf_engine_gpu.py --hidden 128 --intermediate 256 \
        --layers 2 --heads 2 --kv-heads 1 --max-tokens 12 --prompts 4 --threads 1      # CPU, small
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

from essa.adapters.init import lora_config
from essa.adapters.peft_io import (KEY_PREFIX, LoraCandidate, candidate_from_tensors, peft_tensors,
                                   write_adapter)
from essa.config import EngineConfig, ModelConfig
from essa.engines.base import SamplingSettings
from essa.engines.hf_engine import TransformersEngine

MODES = {"fp32": ("float32", "none"), "bf16": ("bfloat16", "none"),
         "int8": ("bfloat16", "int8"), "int4": ("bfloat16", "int4")}
TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
WORDS = ("the quick brown fox jumps over a lazy dog while seven green birds sing about numbers "
         "twelve plus five equals seventeen and red blue colours fill every small room").split()
PROMPTS = ["the quick brown fox", "seven green birds sing about", "twelve plus five equals",
           "a lazy dog", "every small room is full of red and blue colours while", "numbers"]
CONTINUATIONS = [" jumps over the dog", " numbers", " seventeen", " sleeps", " birds sing", " twelve"]


CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
          "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def build_tiny_model(folder: Path, args, seed: int, corpus: list[str] | None = None,
                     vocab_size: int = 512, chat: bool = False) -> Path:
    """Save a random Llama (``args`` sizes) and a byte-level BPE tokenizer trained on WORDS.

    ``corpus``: more texts the tokenizer is trained on (e.g. a task's questions). ``chat``: a
    ChatML chat template, ``<|im_start|>`` / ``<|im_end|>`` special tokens and ``<|im_end|>`` as the
    end-of-sequence token (as Qwen's and SmolLM2's instruct models have).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
    rng = torch.Generator().manual_seed(seed)
    texts = [" ".join(WORDS[i] for i in torch.randint(len(WORDS), (12,), generator=rng).tolist())
             for _ in range(200)] + list(corpus or [])
    specials = ["<|endoftext|>", "<pad>"] + (["<|im_start|>", "<|im_end|>"] if chat else [])
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, pad_token="<pad>",
                                  eos_token="<|im_end|>" if chat else "<|endoftext|>")
    if chat:
        tok.chat_template = CHATML
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=args.hidden, intermediate_size=args.intermediate,
                      num_hidden_layers=args.layers, num_attention_heads=args.heads,
                      num_key_value_heads=args.kv_heads, max_position_embeddings=1024,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                      bos_token_id=None, tie_word_embeddings=False)
    torch.manual_seed(seed)
    LlamaForCausalLM(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def random_candidate(model, rank: int, strength: float, seed: int, name: str) -> LoraCandidate:
    """Random A/B on every TARGETS layer; ``scale * B @ A`` entries have ``strength`` x 0.02 std."""
    config = lora_config(rank, 2.0 * rank, TARGETS)
    scale = config["lora_alpha"] / rank
    gen = torch.Generator().manual_seed(seed)
    tensors = {}
    for path, module in model.named_modules():
        if path.rsplit(".", 1)[-1] not in TARGETS:
            continue
        fan_in, fan_out = int(module.in_features), int(module.out_features)
        a = torch.randn(rank, fan_in, generator=gen) / fan_in ** 0.5
        b = torch.randn(fan_out, rank, generator=gen) * (strength * 0.02 * (fan_in / rank) ** 0.5 / scale)
        tensors[f"{KEY_PREFIX}{path}.lora_A.weight"] = a
        tensors[f"{KEY_PREFIX}{path}.lora_B.weight"] = b
    return candidate_from_tensors(tensors, config, name)


def token_rows(engine, outs) -> list[list[str]]:
    """[candidate][prompt] greedy texts (the engine decodes ids; equal ids give equal text)."""
    return [[samples[0].text for samples in per_prompt] for per_prompt in outs]


def hand_logprob(model, tokenizer, prompt: str, continuation: str, device) -> float:
    """Sum of log p over the continuation: one unpadded forward (the boundary is the prompt length)."""
    n_prompt = len(tokenizer(prompt)["input_ids"])
    ids = tokenizer(prompt + continuation, return_tensors="pt")["input_ids"].to(device)
    with torch.inference_mode():
        logprobs = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)
    return logprobs[n_prompt - 1:-1].gather(-1, ids[0, n_prompt:, None]).sum().item()


# Largest allowed |engine - peft| sum log-prob per continuation token (bf16: rounding of a
# left-padded batch against an unpadded forward).
PEFT_TOLERANCE = {"fp32": 1e-3, "bf16": 0.05}


def scores_vs_peft(engine, candidates, prompts, conts, per_token: float) -> dict:
    """``score_continuations`` of ``candidates`` in one batched engine call against peft's
    ``PeftModel`` forward with ``candidates[0]`` written as a PEFT folder, on the engine's device.

    Returns the largest absolute difference of the first candidate's sums, the largest per
    continuation token, and ``ok``: every item within ``per_token`` x its tokens.
    """
    from peft import PeftModel
    ours = engine.score_continuations(prompts, conts, candidates)[0]
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_adapter(Path(tmp) / "c0", peft_tensors(candidates[0]), candidates[0].config)
        peft_model = PeftModel.from_pretrained(copy.deepcopy(engine.model), str(folder)).eval()
        theirs = [hand_logprob(peft_model, engine.tokenizer, p, c, engine.device)
                  for p, c in zip(prompts, conts)]
        del peft_model
    diffs = [abs(o.logprob - t) for o, t in zip(ours, theirs)]
    return {"max_abs_diff": round(max(diffs), 5),
            "max_diff_per_token": round(max(d / max(o.num_tokens, 1) for d, o in zip(diffs, ours)), 5),
            "ok": all(d <= per_token * max(o.num_tokens, 1) for d, o in zip(diffs, ours))}


def timed_generate(engine, prompts, candidates, sampling) -> tuple[float, int]:
    """(seconds, generated tokens) of one generate call, synchronised on CUDA."""
    cuda = engine.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    outs = engine.generate(prompts, candidates, sampling)
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    return seconds, sum(s.num_tokens for per_c in outs for per_p in per_c for s in per_p)


def run_mode(mode: str, model_dir: Path, args, failures: list[str]) -> dict:
    """Checks and figures for one mode; failed required checks are appended to ``failures``."""
    dtype, quant = MODES[mode]
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    engine = TransformersEngine(model_dir, ModelConfig(path=str(model_dir), dtype=dtype, quantization=quant),
                                EngineConfig(max_model_len=1024), threads=args.threads)
    row = {"mode": mode, "load_s": round(time.perf_counter() - t0, 2),
           "layer": type(engine.model.get_submodule("model.layers.0.self_attn.q_proj")).__name__,
           "footprint_mib": round(engine.model.get_memory_footprint() / 2**20, 2), "checks": {}}
    checks = row["checks"]

    def check(name: str, ok: bool, required: bool = True) -> None:
        checks[name] = bool(ok)
        if required and not ok:
            failures.append(f"{mode}: {name}")

    greedy, short = SamplingSettings(max_tokens=args.max_tokens), SamplingSettings(max_tokens=args.check_tokens)
    cands = [random_candidate(engine.model, args.rank, 0.6 + 0.1 * k, 100 + k, f"c{k}")
             for k in range(args.k)]
    strong = random_candidate(engine.model, args.rank, 2.0, 99, "strong")
    prompts = PROMPTS[:args.check_prompts]
    # 1. mixed batch against each candidate alone; no leak; base against a strong candidate.
    mixed = token_rows(engine, engine.generate(prompts, cands, short))
    alone = [token_rows(engine, engine.generate(prompts, [c], short))[0] for c in cands]
    same = sum(m == a for ms, als in zip(mixed, alone) for m, a in zip(ms, als))
    row["mixed_equal_alone_rows"] = f"{same}/{len(cands) * len(prompts)}"
    check("mixed_equals_alone", same == len(cands) * len(prompts), required=(mode == "fp32"))
    check("candidates_differ", len({tuple(m) for m in mixed}) > 1)
    with_c1 = token_rows(engine, engine.generate(prompts, [cands[0], cands[1]], short))
    with_base = token_rows(engine, engine.generate(prompts, [cands[0], None], short))
    check("no_leak_same_shape", with_c1[0] == with_base[0] and with_c1[1] != with_base[1])
    base_vs_strong = token_rows(engine, engine.generate(prompts, [None, strong], short))
    check("base_differs_from_strong", base_vs_strong[0] != base_vs_strong[1])
    # 2. scores against peft on the same device (plain-weight modes only).
    if quant == "none":
        diff = scores_vs_peft(engine, [cands[0]], prompts, CONTINUATIONS[:len(prompts)],
                              PEFT_TOLERANCE[mode])
        row["peft_max_abs_diff"] = diff["max_abs_diff"]
        row["peft_max_diff_per_token"] = diff["max_diff_per_token"]
        check("scores_match_peft", diff["ok"])
    # 3. speed: base alone, then K candidates at once (after one warm-up call each).
    speed_prompts = [PROMPTS[i % len(PROMPTS)] for i in range(args.prompts)]
    if cuda:  # peak over the timed runs: weights, activations, KV cache (not the peft copy above)
        row["weights_cuda_mib"] = round(torch.cuda.memory_allocated() / 2**20, 1)
        torch.cuda.reset_peak_memory_stats()
    for label, group in (("base", [None]), (f"k{args.k}", cands)):
        engine.generate(speed_prompts[:2], group, SamplingSettings(max_tokens=4))
        runs = sorted(timed_generate(engine, speed_prompts, group, greedy) for _ in range(args.repeats))
        seconds, tokens = runs[len(runs) // 2]
        row[f"tok_s_{label}"] = round(tokens / seconds, 1)
        row[f"tokens_{label}"], row[f"seconds_{label}"] = tokens, round(seconds, 3)
    row["peak_cuda_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1) if cuda else None
    row["mode_s"] = round(time.perf_counter() - t0, 1)
    engine.close()
    return row


def bnb_status() -> str:
    """'ok <version>' when bitsandbytes imports, else the reason (int8/int4 are then skipped)."""
    try:
        import bitsandbytes
        return f"ok {bitsandbytes.__version__}"
    except Exception as err:  # a missing package or a library that does not load
        return f"unavailable: {type(err).__name__}: {err}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", default="bf16,int8,int4,fp32", help="comma-separated of " + ",".join(MODES))
    # Default sizes: SmolLM2-135M's shape (hidden 576, 30 layers, 9 / 3 heads) with a 512-token vocab.
    parser.add_argument("--hidden", type=int, default=576, help="hidden size of the random Llama")
    parser.add_argument("--intermediate", type=int, default=1536, help="MLP size of the random Llama")
    parser.add_argument("--layers", type=int, default=30, help="decoder layers of the random Llama")
    parser.add_argument("--heads", type=int, default=9, help="attention heads")
    parser.add_argument("--kv-heads", type=int, default=3, help="key/value heads")
    parser.add_argument("--repeats", type=int, default=3, help="timed generate calls (median kept)")
    parser.add_argument("--rank", type=int, default=8, help="LoRA rank of the random candidates")
    parser.add_argument("--k", type=int, default=4, help="candidates in one generate call")
    parser.add_argument("--prompts", type=int, default=16, help="prompts in the tokens/s measurement")
    parser.add_argument("--check-prompts", type=int, default=4, help="prompts in the checks (at most 6)")
    parser.add_argument("--max-tokens", type=int, default=64, help="greedy new tokens per completion")
    parser.add_argument("--check-tokens", type=int, default=24, help="greedy new tokens in the checks")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--json", default="", help="write rows, checks and device here")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message=".*MatMul8bitLt.*")
    from transformers.utils import logging as hf_logging
    hf_logging.disable_progress_bar()
    cuda = torch.cuda.is_available()
    device = torch.cuda.get_device_name(0) if cuda else "cpu"
    bnb = bnb_status()
    import peft
    import transformers
    print(f"device: {device}; torch {torch.__version__}, transformers {transformers.__version__}, "
          f"peft {peft.__version__}, bitsandbytes {bnb}", flush=True)
    failures: list[str] = []
    rows, skipped = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_tiny_model(Path(tmp) / "tiny-llama", args, seed=0)
        for mode in [m.strip() for m in args.modes.split(",") if m.strip()]:
            if MODES[mode][1] != "none" and not bnb.startswith("ok"):
                skipped[mode] = bnb
                continue
            try:
                rows.append(run_mode(mode, model_dir, args, failures))
            except Exception as err:  # record and go on with the other modes
                failures.append(f"{mode}: raised {type(err).__name__}: {err}")
                skipped[mode] = f"raised {type(err).__name__}: {err}"
            print(json.dumps(rows[-1] if rows and rows[-1]["mode"] == mode else {mode: skipped[mode]}),
                  flush=True)
            write_json(args.json, device, bnb, args, rows, skipped, failures)  # partial results too
    ref = next((r["tok_s_base"] for r in rows if r["mode"] == "bf16"), None)
    kcol = f"tok_s_k{args.k}"
    print(f"\n| mode | layer | tok/s base | tok/s K={args.k} | base / bf16 base | K={args.k} / bf16 base "
          "| CUDA MiB loaded | peak CUDA MiB | mixed=alone | peft max diff/token |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        ratio = (lambda v: f"{v / ref:.2f}" if ref else "-")
        print(f"| {r['mode']} | {r['layer']} | {r['tok_s_base']} | {r[kcol]} | {ratio(r['tok_s_base'])} "
              f"| {ratio(r[kcol])} | {r.get('weights_cuda_mib')} | {r['peak_cuda_mib']} "
              f"| {r['mixed_equal_alone_rows']} | {r.get('peft_max_diff_per_token', '-')} |")
    for r in rows:
        print(f"{r['mode']} checks: " + ", ".join(f"{k}={'pass' if v else 'FAIL'}" for k, v in r["checks"].items()))
    for mode, why in skipped.items():
        print(f"{mode}: skipped or failed: {why}")
    print("FAILED: " + "; ".join(failures) if failures else "all required checks passed")
    return 1 if failures else 0


def write_json(path: str, device: str, bnb: str, args, rows, skipped, failures) -> None:
    """Everything measured so far, with the versions, to ``path`` (nothing when path is empty)."""
    if not path:
        return
    import peft
    import transformers
    Path(path).write_text(json.dumps({
        "device": device, "torch": torch.__version__, "transformers": transformers.__version__,
        "peft": peft.__version__, "bitsandbytes": bnb, "args": vars(args), "rows": rows,
        "skipped": skipped, "failures": failures}, indent=1))


if __name__ == "__main__":
    sys.exit(main())
