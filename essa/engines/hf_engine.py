"""The transformers engine: the fallback when vLLM is absent, and the bitsandbytes INT8 / 4-bit path.

The base model is loaded once (``model.dtype``; ``model.quantization`` none, int8 or int4 through
``BitsAndBytesConfig``). Candidates never touch its weights: :class:`essa.engines.hf_lora.BatchedLora`
adds each candidate's LoRA delta to its own rows of a batch, over quantized layers too.
Batches are left-padded; rows are laid out candidate-major, then prompt, then sample, and cut into
chunks of at most ``max_batch_rows`` rows (docs/engines_transformers.md).
"""

from __future__ import annotations

import gc
import logging
import os
from pathlib import Path
from typing import Any, Sequence

import torch

from essa.engines.base import Completion, ContinuationScore, SamplingSettings
from essa.engines.hf_lora import BatchedLora, row_segments
from essa.engines.lora_weights import as_lora_candidate
from essa.engines.stop_rules import cut_text, get_rule
from essa.models.dtype import probe_device, resolve_dtype

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
        """Load tokenizer and model; ``threads`` > 0 sets torch's CPU threads (1 is fastest on
        small, shared CPUs); ``device`` defaults to cuda when available."""
        self.dtype_choice = resolve_dtype(model_cfg.dtype, probe_device(device or "auto"))
        dtype = _DTYPES[self.dtype_choice.dtype]
        quant = quantization_config(model_cfg.quantization, dtype)  # fp8 fails before any loading
        if threads > 0:
            torch.set_num_threads(threads)
        from transformers import AutoModelForCausalLM, AutoTokenizer

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
        self._token_texts: dict[int, str] = {}  # token id -> its text alone (stop rule triggers)
        if self.dtype_choice.warning:
            logging.getLogger("essa").warning(self.dtype_choice.warning)

    def _eos_ids(self) -> list[int]:
        """Every token that ends a completion: the generation config's and the tokenizer's eos."""
        ids = self.model.generation_config.eos_token_id
        ids = [] if ids is None else [ids] if isinstance(ids, int) else list(ids)
        if self.tokenizer.eos_token_id is not None:
            ids.append(self.tokenizer.eos_token_id)
        return sorted(set(ids))

    def _per_candidate(self, candidates: Sequence[Any], items: int, run) -> list[list]:
        """``run(chunk_no, item indices)`` over rows laid out candidate-major (``items`` rows per
        candidate), in chunks of ``max_batch_rows``, each row under its candidate's LoRA;
        the results indexed [candidate][item]. Folders are re-read on every call: they may change."""
        lora = BatchedLora(self.model, [None if c is None else as_lora_candidate(c) for c in candidates])
        rows = [(k, i) for k in range(len(candidates)) for i in range(items)]
        results: list = []
        for chunk_no, start in enumerate(range(0, len(rows), self.max_batch_rows)):
            chunk = rows[start:start + self.max_batch_rows]
            with torch.inference_mode(), lora.active(row_segments([k for k, _ in chunk])):
                results += run(chunk_no, [i for _, i in chunk])
        return [results[k * items:(k + 1) * items] for k in range(len(candidates))]

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
        ids = torch.full((len(rows), width), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            if r:
                ids[i, width - len(r):] = torch.tensor(r)
                mask[i, width - len(r):] = 1
        return ids.to(self.device), mask.to(self.device)

    def generate(self, prompts: Sequence[str], candidates: Sequence[Any] = (None,),
                 sampling: SamplingSettings | None = None) -> list[list[list[Completion]]]:
        """Completions [candidate][prompt][sample]; greedy unless ``sampling.temperature > 0``."""
        sampling = sampling or SamplingSettings()
        n, prompt_ids, config = sampling.n, self._encode(prompts), self._generation_config(sampling)
        rule = sampling.stop_rule
        from transformers import StoppingCriteriaList

        def run(chunk_no: int, rows: list[int]) -> list[Completion]:  # row = prompt * n + sample
            ids, mask = self._left_pad([prompt_ids[r // n] for r in rows])
            stopper, extra = None, {}
            if rule is not None:  # engine.stop_at_answer: rows end once their answer is decided
                stopper = _RuleStop(rule, self.tokenizer, ids.shape[1], self._token_texts)
                extra["stopping_criteria"] = StoppingCriteriaList([stopper])
            with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
                torch.manual_seed(sampling.seed + chunk_no)  # sampled rows: reproducible per chunk
                out = self.model.generate(input_ids=ids, attention_mask=mask, generation_config=config,
                                          tokenizer=self.tokenizer, **extra)
            return [self._completion(r, sampling.stop, rule, stopper.stopped.get(i) if stopper else None)
                    for i, r in enumerate(out[:, ids.shape[1]:].tolist())]

        flat = self._per_candidate(candidates, len(prompts) * n, run)
        return [[per[p * n:(p + 1) * n] for p in range(len(prompts))] for per in flat]

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

    def _completion(self, new_ids: list[int], stop: list[str], rule: str | None = None,
                    stopped_at: int | None = None) -> Completion:
        """Cut generated ids after the first eos (counted, not shown) or at a stop string; with a
        stop rule, the ids end where the rule stopped the row (``stopped_at`` tokens: what follows
        is padding) and the text at the rule's cut."""
        if stopped_at is not None:
            new_ids = new_ids[:stopped_at]
        eos = next((i for i, t in enumerate(new_ids) if t in self.eos_ids), None)
        ids = new_ids if eos is None else new_ids[:eos]
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        cut = _first_stop(text, stop)
        if cut is None:
            return Completion(cut_text(rule, text), len(ids) if eos is None else eos + 1)
        # Like vLLM: the text ends before the stop string; the tokens count up to the one completing it.
        used = next(n for n in range(1, len(ids) + 1)
                    if _first_stop(self.tokenizer.decode(ids[:n], skip_special_tokens=True), stop)
                    is not None)
        return Completion(cut_text(rule, text[:cut]), used)

    def score_continuations(self, prompts: Sequence[str], continuations: Sequence[str],
                            candidates: Sequence[Any] = (None,)) -> list[list[ContinuationScore]]:
        """Sum of log p(continuation token | everything before), indexed [candidate][item].

        The continuation's tokens are those of ``prompt + continuation`` after its longest common
        prefix with the tokens of ``prompt`` (a token merging across the boundary counts as
        continuation); the first token, with no context, is never scored.
        """
        if len(prompts) != len(continuations):
            raise ValueError(f"{len(prompts)} prompts but {len(continuations)} continuations")
        fulls = self._encode([p + c for p, c in zip(prompts, continuations)])
        starts = [max(1, len(os.path.commonprefix([head, full])))  # list-wise common prefix
                  for head, full in zip(self._encode(prompts), fulls)]
        return self._per_candidate(candidates, len(fulls), lambda _, rows: self._score_batch(
            [fulls[i] for i in rows], [starts[i] for i in rows]))

    def _score_batch(self, fulls: list[list[int]], starts: list[int]) -> list[ContinuationScore]:
        """One forward pass over left-padded rows; only the last positions' logits are computed."""
        ids, mask = self._left_pad(fulls)
        # Left padding shifts the tokens: positions must count real tokens only, as in generate().
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        counts = [len(full) - start for full, start in zip(fulls, starts)]
        keep = max(counts) + 1  # logits at column t predict the token at column t + 1
        logits = self.model(input_ids=ids, attention_mask=mask, position_ids=positions,
                            use_cache=False, logits_to_keep=keep).logits  # (N, keep, vocab)
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        # A row's continuation fills its last `count` columns, predicted one column earlier.
        return [ContinuationScore(float(logprobs[row, keep - 1 - count:keep - 1].gather(
                    -1, ids[row, ids.shape[1] - count:, None]).sum().item()), count)
                for row, count in enumerate(counts)]

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


def _first_stop(text: str, stop: list[str]) -> int | None:
    """Index of the earliest stop string in ``text``, or None."""
    hits = [i for i in (text.find(s) for s in stop if s) if i >= 0]
    return min(hits) if hits else None


class _RuleStop:
    """A transformers stopping criterion for a stop rule (essa/engines/stop_rules.py): a row is
    done once the rule gives a cut of its generated text. Only a new token holding one of the
    rule's trigger characters (after one holding a required character) costs a decode of the
    row. ``stopped``: row -> generated tokens when it stopped."""

    def __init__(self, rule: str, tokenizer, prompt_width: int, token_texts: dict[int, str]):
        self.rule, self.tokenizer, self.width = get_rule(rule), tokenizer, prompt_width
        self.token_texts = token_texts  # shared by the engine's calls: token id -> its text
        self.read = prompt_width  # columns of input_ids already read
        self.armed: set[int] = set()
        self.stopped: dict[int, int] = {}

    def _text(self, token_id: int) -> str:
        text = self.token_texts.get(token_id)
        if text is None:
            text = self.token_texts[token_id] = self.tokenizer.decode([token_id])
        return text

    def __call__(self, input_ids: torch.LongTensor, scores=None, **kwargs) -> torch.BoolTensor:
        new = input_ids[:, self.read:].tolist()
        self.read = input_ids.shape[1]
        rule = self.rule
        for row, tokens in enumerate(new):
            if row in self.stopped:
                continue
            triggered = False
            for token_id in tokens:
                text = self._text(token_id)
                if row not in self.armed and any(c in text for c in rule.requires):
                    self.armed.add(row)
                triggered = triggered or (row in self.armed and any(c in text for c in rule.triggers))
            if triggered:
                generated = input_ids[row, self.width:].tolist()
                if rule.cut(self.tokenizer.decode(generated, skip_special_tokens=True)) is not None:
                    self.stopped[row] = len(generated)
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        if self.stopped:
            done[list(self.stopped)] = True
        return done
