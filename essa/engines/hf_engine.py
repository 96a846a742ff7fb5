"""The transformers engine: the fallback when vLLM is absent, and the bitsandbytes INT8 / 4-bit path.

The base model is loaded once (``model.dtype``; ``model.quantization`` none, int8 or int4 through
``BitsAndBytesConfig``). Candidates never touch its weights: :class:`essa.engines.hf_lora.BatchedLora`
adds each candidate's LoRA delta to its own rows of a batch, so several candidates share one
``generate`` pass and one forward pass of ``score_continuations``, over quantized layers too.

    engine = TransformersEngine(model_path, ModelConfig(quantization="int4"), EngineConfig())
    outs = engine.generate(prompts, [None, "runs/sft/adapter", LoraCandidate(tensors, config)])
    outs[candidate][prompt][sample].text

Batches are left-padded; rows are laid out candidate-major, then prompt, then sample, and cut into
chunks of at most ``max_batch_rows`` rows.
"""

from __future__ import annotations

import gc
import logging
from pathlib import Path
from typing import Any, Sequence

import torch

from essa.engines.base import Completion, ContinuationScore, LoraCandidate, SamplingSettings
from essa.engines.hf_lora import BatchedLora, row_segments
from essa.engines.lora_weights import as_lora_candidate

_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def quantization_config(quantization: str, dtype: torch.dtype):
    """transformers' BitsAndBytesConfig for 'int8' / 'int4' (nf4), None for 'none'."""
    if quantization == "none":
        return None
    if quantization == "fp8":
        raise ValueError("model.quantization='fp8' is not available in the transformers engine "
                         "(bitsandbytes has no FP8); use engine.backend: vllm for fp8, or int8 / int4 here")
    from transformers import BitsAndBytesConfig
    if quantization == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    if quantization == "int4":
        # nf4 is the 4-bit type of QLoRA and of the paper's INT4 runs; matmuls in the model dtype.
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                  bnb_4bit_compute_dtype=dtype)
    raise ValueError(f"model.quantization={quantization!r}: choose none, int8 or int4")


class TransformersEngine:
    """A transformers causal LM loaded once; candidates applied per row group by forward hooks."""

    name = "transformers"
    # It can batch candidates as rows, but a pass then costs in proportion to its rows (on the
    # CPU, where this engine is mostly used): the runtime hands it one candidate at a time.
    candidates_per_pass = 1

    def __init__(self, model_path: str | Path, model_cfg, engine_cfg, *, max_batch_rows: int = 64,
                 threads: int = 0, device: str | None = None):
        """Load tokenizer and model.

        ``max_batch_rows``: most sequences in one forward batch; ``threads``: torch CPU threads
        (0 leaves torch's setting; 1 is fastest on small, shared CPUs); ``device``: default cuda
        when available, else cpu.
        """
        from essa.models.dtype import probe_device, resolve_dtype
        self.dtype_choice = resolve_dtype(model_cfg.dtype, probe_device(device or "auto"))
        dtype = _DTYPES[self.dtype_choice.dtype]
        quant = quantization_config(model_cfg.quantization, dtype)  # fp8 fails before any loading
        if threads > 0:
            torch.set_num_threads(threads)
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.model_path = Path(model_path)
        self.quantization = model_cfg.quantization
        self.max_model_len = engine_cfg.max_model_len
        self.max_batch_rows = max_batch_rows
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_path))
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        # bitsandbytes layers are placed by device_map; a plain model is moved after loading.
        kwargs = {"device_map": {"": str(self.device)}} if quant is not None else {}
        self.model = AutoModelForCausalLM.from_pretrained(str(model_path), dtype=dtype,
                                                          quantization_config=quant, **kwargs)
        if quant is None:
            self.model.to(self.device)
        self.model.eval()
        self.eos_ids = self._eos_ids()
        if self.dtype_choice.warning:
            logging.getLogger("essa").warning(self.dtype_choice.warning)

    def _eos_ids(self) -> list[int]:
        """Every token that ends a completion: the generation config's and the tokenizer's eos."""
        ids = self.model.generation_config.eos_token_id
        ids = [] if ids is None else [ids] if isinstance(ids, int) else list(ids)
        if self.tokenizer.eos_token_id is not None:
            ids.append(self.tokenizer.eos_token_id)
        return sorted(set(ids))

    # ---- candidates and batches --------------------------------------------------------------

    def _lora(self, candidates: Sequence[Any]) -> BatchedLora:
        """Candidates -> hooks; folders are read here (each call re-reads: folders may change)."""
        loaded = [None if c is None else as_lora_candidate(c) for c in candidates]
        return BatchedLora(self.model, loaded)

    def _encode(self, texts: Sequence[str]) -> list[list[int]]:
        ids = self.tokenizer(list(texts))["input_ids"]
        too_long = [len(x) for x in ids if len(x) >= self.max_model_len]
        if too_long:
            raise ValueError(f"a prompt of {max(too_long)} tokens does not fit "
                             f"engine.max_model_len={self.max_model_len}")
        return ids

    def _left_pad(self, rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """input_ids and attention_mask (N, L), pad on the left so every row ends at column L - 1."""
        width = max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            if r:
                ids[i, width - len(r):] = torch.tensor(r)
                mask[i, width - len(r):] = 1
        return ids.to(self.device), mask.to(self.device)

    def _chunks(self, total: int):
        for start in range(0, total, self.max_batch_rows):
            yield start, min(start + self.max_batch_rows, total)

    # ---- generation --------------------------------------------------------------------------

    def generate(self, prompts: Sequence[str], candidates: Sequence[Any] = (None,),
                 sampling: SamplingSettings | None = None) -> list[list[list[Completion]]]:
        """Completions [candidate][prompt][sample]; greedy unless ``sampling.temperature > 0``."""
        sampling = sampling or SamplingSettings()
        candidates, prompts = list(candidates), list(prompts)
        lora = self._lora(candidates)
        prompt_ids = self._encode(prompts)
        # One row per (candidate, prompt, sample), candidate-major.
        rows = [(k, p) for k in range(len(candidates)) for p in range(len(prompts))
                for _ in range(sampling.n)]
        config = self._generation_config(sampling)
        results: list[Completion] = []
        for chunk_no, (start, stop) in enumerate(self._chunks(len(rows))):
            chunk = rows[start:stop]
            ids, mask = self._left_pad([prompt_ids[p] for _, p in chunk])
            with torch.inference_mode(), lora.active(row_segments([k for k, _ in chunk])), \
                    torch.random.fork_rng(devices=self._rng_devices()):
                torch.manual_seed(sampling.seed + chunk_no)  # sampled rows: reproducible per chunk
                out = self.model.generate(input_ids=ids, attention_mask=mask,
                                          generation_config=config, tokenizer=self.tokenizer)
            new = out[:, ids.shape[1]:].tolist()  # (N, new tokens)
            results.extend(self._completion(r, sampling.stop) for r in new)
        per = len(prompts) * sampling.n
        return [[results[k * per + p * sampling.n: k * per + (p + 1) * sampling.n]
                 for p in range(len(prompts))] for k in range(len(candidates))]

    def _rng_devices(self) -> list:
        return [self.device] if self.device.type == "cuda" else []

    def _generation_config(self, sampling: SamplingSettings):
        """A clean GenerationConfig: vLLM's meaning of the settings (no top-k, no penalties)."""
        from transformers import GenerationConfig
        sample = sampling.temperature > 0
        return GenerationConfig(
            max_new_tokens=sampling.max_tokens, do_sample=sample,
            temperature=sampling.temperature if sample else None,
            top_p=sampling.top_p if sample else None, top_k=0 if sample else None,
            num_return_sequences=1, eos_token_id=self.eos_ids,
            pad_token_id=self.tokenizer.pad_token_id, stop_strings=sampling.stop or None)

    def _completion(self, new_ids: list[int], stop: list[str]) -> Completion:
        """Cut generated ids after the first eos (counted, not shown) or at a stop string."""
        eos = next((i for i, t in enumerate(new_ids) if t in self.eos_ids), None)
        ids = new_ids if eos is None else new_ids[:eos]
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        cut = _first_stop(text, stop)
        if cut is None:
            return Completion(text, len(ids) if eos is None else eos + 1)
        # Like vLLM: the text ends before the stop string; the tokens count up to the one completing it.
        used = next(n for n in range(1, len(ids) + 1)
                    if _first_stop(self.tokenizer.decode(ids[:n], skip_special_tokens=True), stop)
                    is not None)
        return Completion(text[:cut], used)

    # ---- log-likelihood of given continuations ----------------------------------------------

    def score_continuations(self, prompts: Sequence[str], continuations: Sequence[str],
                            candidates: Sequence[Any] = (None,)) -> list[list[ContinuationScore]]:
        """Sum of log p(continuation token | everything before), indexed [candidate][item].

        The boundary is read from the tokens: the continuation's tokens are those of
        ``prompt + continuation`` after its longest common prefix with the tokens of ``prompt``
        (a token merging across the boundary counts as continuation).
        """
        if len(prompts) != len(continuations):
            raise ValueError(f"{len(prompts)} prompts but {len(continuations)} continuations")
        candidates = list(candidates)
        lora = self._lora(candidates)
        items = [_split_tokens(p, f) for p, f in
                 zip(self._encode(prompts), self._encode([p + c for p, c in zip(prompts, continuations)]))]
        rows = [(k, i) for k in range(len(candidates)) for i in range(len(items))]
        scores: list[ContinuationScore] = []
        for start, stop in self._chunks(len(rows)):
            chunk = rows[start:stop]
            with torch.inference_mode(), lora.active(row_segments([k for k, _ in chunk])):
                scores.extend(self._score_batch([items[i] for _, i in chunk]))
        n = len(items)
        return [scores[k * n:(k + 1) * n] for k in range(len(candidates))]

    def _score_batch(self, items: list[tuple[list[int], int]]) -> list[ContinuationScore]:
        """One forward pass over left-padded rows; only the last positions' logits are computed."""
        ids, mask = self._left_pad([full for full, _ in items])
        # Left padding shifts the tokens: positions must count real tokens only, as in generate().
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        longest = max(len(full) - boundary for full, boundary in items)
        keep = longest + 1  # logits at column t predict the token at column t + 1
        logits = self.model(input_ids=ids, attention_mask=mask, position_ids=positions,
                            use_cache=False, logits_to_keep=keep).logits  # (N, keep, vocab)
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        scores = []
        for row, (full, boundary) in enumerate(items):
            count = len(full) - boundary
            if count == 0:
                scores.append(ContinuationScore(0.0, 0))
                continue
            # The row's continuation fills its last `count` columns, predicted one column earlier.
            targets = ids[row, ids.shape[1] - count:]  # (count,)
            preds = logprobs[row, keep - 1 - count:keep - 1]  # (count, vocab)
            total = preds.gather(-1, targets[:, None]).sum().item()
            scores.append(ContinuationScore(float(total), count))
        return scores

    def describe(self) -> str:
        """One line for logs and the run directory: backend, dtype, quantization, device."""
        quant = "" if self.quantization == "none" else f", {self.quantization}"
        return (f"transformers {self.dtype_choice.dtype} ({self.dtype_choice.reason}){quant} "
                f"on {self.device}")

    def close(self) -> None:
        """Drop the model and free its memory."""
        self.model = None
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


def _split_tokens(prompt_ids: list[int], full_ids: list[int]) -> tuple[list[int], int]:
    """(tokens of prompt + continuation, index of the first continuation token)."""
    boundary = 0
    for a, b in zip(prompt_ids, full_ids):
        if a != b:
            break
        boundary += 1
    # The first token has no context to be predicted from: it is never scored.
    return full_ids, max(boundary, 1)


def _first_stop(text: str, stop: list[str]) -> int | None:
    """Index of the earliest stop string in ``text``, or None."""
    hits = [i for i in (text.find(s) for s in stop if s) if i >= 0]
    return min(hits) if hits else None
