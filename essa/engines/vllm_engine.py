"""The vLLM engine (CPU build here, CUDA build on clusters): a merged mode, an adapter mode, or both.

:class:`MergedMode` adds one candidate per pass into the base weights and restores them exactly;
:class:`AdapterMode` loads up to ``max_loras`` candidates per pass as LoRA adapters. A hybrid
engine holds both: one candidate runs merged (plain speed), several together as adapters (K x B
requests per pass keep the CPU busier than K passes of B). The engine core runs in this process
(``VLLM_ENABLE_V1_MULTIPROCESSING=0``): one per MPI rank, its weights reachable for merged mode.
vLLM's private API is used only through :mod:`essa.engines.vllm_internals`, which checks the version.
"""

from __future__ import annotations

import itertools
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Sequence

from essa.adapters.peft_io import peft_tensors, read_adapter, write_adapter
from essa.engines import vllm_internals as internals
from essa.engines.base import Completion, ContinuationScore, SamplingSettings
from essa.engines.compile_choice import choose_eager
from essa.engines.lora_weights import as_lora_candidate, module_deltas
from essa.engines.mode_choice import resolve_mode
from essa.engines.stop_rules import cut_text
from essa.engines.vllm_cpu_lora import LoraProductCache, caching
from essa.engines.vllm_merged import MergedWeights
from essa.models.dtype import resolve_dtype
from essa.quantize.paths import served_checkpoint, served_quantization

VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


def vllm_lora_rank(rank: int) -> int:
    """The smallest rank vLLM accepts that holds ``rank`` (vLLM takes only a fixed set)."""
    if rank > VLLM_LORA_RANKS[-1]:
        raise ValueError(f"LoRA rank {rank} exceeds vLLM's largest supported rank {VLLM_LORA_RANKS[-1]}")
    return next(allowed for allowed in VLLM_LORA_RANKS if allowed >= rank)


class _Mode:
    """One way to apply candidates to a started vLLM; subclasses say how in :meth:`run`."""

    def __init__(self, llm, lora_cache: LoraProductCache | None):
        self.llm, self.tokenizer, self.lora_cache = llm, llm.get_tokenizer(), lora_cache

    def run(self, requests: list, candidates: list, params) -> list[list]:
        """vLLM's outputs [candidate][request] of every request under every candidate."""
        raise NotImplementedError

    def _generate(self, requests: list, params, loras) -> list:
        with caching(self.lora_cache):  # None: this engine has no CPU LoRA layers
            return self.llm.generate(requests, params, lora_request=loras, use_tqdm=False)

    def generate(self, prompts: Sequence[str], candidates: Sequence[Any] = (None,),
                 sampling: SamplingSettings | None = None) -> list[list[list[Completion]]]:
        """Completions [candidate][prompt][sample]: every prompt under every candidate."""
        sampling = sampling or SamplingSettings()
        outputs = self.run(list(prompts), list(candidates), _params(sampling))
        # A stopped request's text ends at its rule's cut (the end token it was forced to, and
        # the rest of the token that completed the answer, dropped); its count keeps every token.
        return [[[Completion(cut_text(sampling.stop_rule, o.text), len(o.token_ids)) for o in out.outputs]
                 for out in per] for per in outputs]

    def score_continuations(self, prompts: Sequence[str], continuations: Sequence[str],
                            candidates: Sequence[Any] = (None,)) -> list[list[ContinuationScore]]:
        """Log-likelihood of each continuation after its prompt, via prompt log-probabilities."""
        from vllm.inputs import TokensPrompt
        requests, starts = [], []
        for prompt, cont in zip(prompts, continuations):
            head, full = self._tokens(prompt), self._tokens(prompt + cont)
            if full[:len(head)] != head:  # the boundary merged into one token: split explicitly
                full = head + self._tokens(cont)
            requests.append(TokensPrompt(prompt_token_ids=full))
            starts.append(len(head))
        outputs = self.run(requests, list(candidates), _params(SamplingSettings(max_tokens=1), prompt_logprobs=0))
        return [[ContinuationScore(float(sum(out.prompt_logprobs[i][out.prompt_token_ids[i]].logprob
                                       for i in range(start, len(out.prompt_token_ids)))),
                                   len(out.prompt_token_ids) - start)
                 for out, start in zip(per, starts)] for per in outputs]

    def _tokens(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]


def _params(sampling: SamplingSettings, **extra):
    from vllm import SamplingParams
    from vllm.platforms import current_platform
    greedy = sampling.temperature <= 0
    # The CPU build cannot use per-request seeds in large batches: when a seeded request's
    # prefill is chunked, vLLM 0.32 rewinds its torch generator with set_offset, which CPU
    # generators refuse ("CPU Generator does not use offset"). There the engine's own generator
    # (seeded with engine.seed at start) samples: reproducible for the same calls on a new engine.
    seeded = not greedy and not current_platform.is_cpu()
    if sampling.stop_rule is not None:  # read by internals.StopRuleProcessor in the engine core
        extra["extra_args"] = {internals.STOP_RULE_ARG: sampling.stop_rule}
    return SamplingParams(max_tokens=sampling.max_tokens, temperature=sampling.temperature,
                          top_p=1.0 if greedy else sampling.top_p, n=sampling.n,
                          seed=sampling.seed if seeded else None, stop=sampling.stop or None, **extra)


class MergedMode(_Mode):
    """One candidate per pass, merged into the base weights; the base is exact again after a call."""

    def __init__(self, llm, lora_cache, weights: MergedWeights):
        super().__init__(llm, lora_cache)
        self.weights = weights

    def run(self, requests: list, candidates: list, params) -> list[list]:
        results = []
        try:
            for cand in candidates:
                if cand is None:
                    self.weights.restore()
                else:  # replaces the previous candidate's weights directly
                    self.weights.apply(module_deltas(as_lora_candidate(cand)))
                self._forget_cached_prompts()
                results.append(self._generate(requests, params, None))
        finally:
            self.weights.restore()  # the base weights, exactly, after every call
            self._forget_cached_prompts()
        return results

    def _forget_cached_prompts(self) -> None:
        """Drop vLLM's prefix cache after the weights changed: its KV blocks were computed under
        the previous weights and would otherwise be reused for any prompt of a full block or more
        (128 tokens on the CPU build, 16 on GPUs). Adapter mode needs no reset: vLLM keys cached
        blocks by adapter."""
        if not self.llm.reset_prefix_cache():
            raise RuntimeError("vLLM refused to reset its prefix cache after a weight change "
                               "(requests still running?)")


class AdapterMode(_Mode):
    """Up to ``max_loras`` candidates per pass, each a LoRA adapter loaded for that pass only.

    The CPU build's LoRA kernels are not batch-invariant: a candidate's greedy output can depend
    on how many requests share the pass (not on which other adapters are there)."""

    def __init__(self, llm, lora_cache, max_loras: int, adapter_dir: str | None):
        super().__init__(llm, lora_cache)
        self.max_loras = max_loras
        # In-memory candidates are written here (tmpfs when there is one) for vLLM to load.
        base = Path(adapter_dir or ("/dev/shm" if Path("/dev/shm").is_dir() else "/tmp"))
        self.root = base / f"essa-adapters-{os.getpid()}"
        self.root.mkdir(parents=True, exist_ok=True)
        self._ids = itertools.count(1)  # never reused: vLLM knows an adapter by its id

    def run(self, requests: list, candidates: list, params) -> list[list]:
        results = []
        for start in range(0, len(candidates), self.max_loras):
            group = candidates[start:start + self.max_loras]
            loaded = [self.load(cand) for cand in group]
            try:
                loras = [entry[0] if entry else None for entry in loaded for _ in requests]
                outs = self._generate(requests * len(group), params, loras)
                results += [outs[j * len(requests):(j + 1) * len(requests)] for j in range(len(group))]
            finally:
                for entry in loaded:
                    if entry:
                        self.unload(entry)
        return results

    def load(self, candidate):
        """(LoRARequest, folder, we own the folder) for a candidate, or None for the base model."""
        if candidate is None:
            return None
        from vllm.lora.request import LoRARequest
        lora_id = next(self._ids)
        if isinstance(candidate, (str, Path)):
            read_adapter(candidate)  # a clear error for a bad folder before vLLM sees it
            folder, owned = Path(candidate), False
        else:  # vLLM gets files (copies), never the caller's tensors
            folder, owned = self.root / f"candidate-{lora_id}", True
            write_adapter(folder, peft_tensors(candidate), candidate.config)
        return LoRARequest(f"candidate-{lora_id}", lora_id, str(folder)), folder, owned

    def unload(self, entry) -> None:
        """Remove a :meth:`load` result from vLLM, and its folder if we wrote it."""
        request, folder, owned = entry
        self.llm.llm_engine.remove_lora(request.lora_int_id)
        if owned:
            shutil.rmtree(folder, ignore_errors=True)

    def loaded_ids(self) -> set[int]:
        """Adapter ids vLLM holds now (empty between calls: every adapter is removed after use)."""
        return set(self.llm.llm_engine.list_loras())


class VLLMEngine:
    """vLLM with the base model loaded once; candidates applied per ``engine.mode``."""

    name = "vllm"

    def __init__(self, model_path: Path, model_cfg, engine_cfg, lora_rank: int = 8,
                 lora_modules: Sequence[str] = ("q_proj", "k_proj", "v_proj", "o_proj"),
                 planned_tokens: int | None = None):
        """``planned_tokens``: the most tokens this engine will generate (decides
        ``engine.enforce_eager: auto`` on the CPU build); None when unknown."""
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        if engine_cfg.kv_cache_gib > 0:  # read by the CPU worker when it sizes its KV cache
            os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(engine_cfg.kv_cache_gib)
        from vllm import LLM
        from vllm.platforms import current_platform

        self.on_cpu = current_platform.is_cpu()
        self.dtype_choice = resolve_dtype(model_cfg.dtype)
        self.eager, self.eager_reason = choose_eager(engine_cfg.enforce_eager, self.on_cpu, planned_tokens,
                                                     self.dtype_choice.dtype)
        # int8/int4: a compressed-tensors copy (W8A8/W4A16) that vLLM recognises from its config;
        # a model.path that is itself quantized counts as quantized too (nothing dense to merge into).
        quant = model_cfg.quantization
        served = served_checkpoint(model_path, quant, model_cfg.quantized_path)
        self.quantization = served_quantization(served, quant)
        if quant == "int4" and self.on_cpu:
            missing = internals.cpu_int4_kernel_missing()
            if missing:
                raise RuntimeError(f"model.quantization=int4: {missing}. Run INT4 with engine.backend="
                                   f"transformers (bitsandbytes nf4 on the same base model), or serve "
                                   f"this checkpoint with CUDA vLLM; int8 runs here.")
        self.mode = resolve_mode(engine_cfg.mode, self.quantization, self.on_cpu,
                                 engine_cfg.tensor_parallel_size, self.eager)
        kwargs: dict[str, Any] = {"quantization": "fp8" if quant == "fp8" else None}
        lora_on = self.mode in ("adapter", "hybrid")
        if lora_on:
            if self.on_cpu:  # vLLM's CPU LoRA ops copy each token's adapter: see vllm_cpu_lora
                internals.install_cpu_lora()
            # Only the adapter's modules carry LoRA: vLLM would otherwise wrap every linear layer
            # and run (zero) LoRA products through the MLP too.
            kwargs.update(enable_lora=True, max_lora_rank=vllm_lora_rank(lora_rank),
                          max_loras=engine_cfg.max_loras, max_cpu_loras=engine_cfg.max_loras,
                          lora_target_modules=list(lora_modules))
        if engine_cfg.stop_at_answer:  # the stop rules' processor (off: vLLM runs without it)
            kwargs["logits_processors"] = [internals.StopRuleProcessor]
        self.llm = LLM(model=str(served), dtype=self.dtype_choice.dtype,
                       max_model_len=engine_cfg.max_model_len,
                       gpu_memory_utilization=engine_cfg.memory_fraction,
                       tensor_parallel_size=engine_cfg.tensor_parallel_size,
                       seed=engine_cfg.seed, enforce_eager=self.eager, **kwargs)
        self.tokenizer = self.llm.get_tokenizer()
        if self.dtype_choice.warning:
            logging.getLogger("essa").warning(self.dtype_choice.warning)
        lora_cache = LoraProductCache() if lora_on and self.on_cpu else None  # this engine's alone
        self.merged_mode = MergedMode(self.llm, lora_cache, MergedWeights(
            internals.driver_model(self.llm), Path(model_path), list(lora_modules), self.on_cpu)) \
            if self.mode in ("merged", "hybrid") else None
        self.adapter_mode = AdapterMode(self.llm, lora_cache, engine_cfg.max_loras,
                                        engine_cfg.adapter_dir or None) if lora_on else None

    def describe(self) -> str:
        """One line for logs and the run directory: backend, dtype, compile and candidate mode."""
        quant = "" if self.quantization == "none" else f", base {self.quantization}"
        return (f"vllm {self.dtype_choice.dtype} ({self.dtype_choice.reason}){quant}, "
                f"{'eager' if self.eager else 'compiled'} ({self.eager_reason}), mode {self.mode}")

    @property
    def candidates_per_pass(self) -> int:
        """Candidates one engine pass runs together: max_loras with an adapter mode, 1 merged."""
        return self.adapter_mode.max_loras if self.adapter_mode else 1

    def mode_for(self, candidates: Sequence[Any]) -> _Mode:
        """The mode a call runs in: merged for one candidate when the engine holds it (hybrid:
        plain speed), the adapter mode otherwise."""
        if self.merged_mode and (len(candidates) == 1 or not self.adapter_mode):
            return self.merged_mode
        return self.adapter_mode

    def generate(self, prompts: Sequence[str], candidates: Sequence[Any] = (None,),
                 sampling: SamplingSettings | None = None) -> list[list[list[Completion]]]:
        """Completions [candidate][prompt][sample]: every prompt under every candidate."""
        return self.mode_for(candidates).generate(prompts, candidates, sampling)

    def score_continuations(self, prompts: Sequence[str], continuations: Sequence[str],
                            candidates: Sequence[Any] = (None,)) -> list[list[ContinuationScore]]:
        """Log-likelihood of each continuation after its prompt, via prompt log-probabilities."""
        return self.mode_for(candidates).score_continuations(prompts, continuations, candidates)

    def close(self) -> None:
        """Free vLLM and remove this engine's adapter folders."""
        if self.adapter_mode is not None:
            shutil.rmtree(self.adapter_mode.root, ignore_errors=True)
        self.merged_mode = self.adapter_mode = None
        del self.llm
