"""The vLLM engine (CPU build here, CUDA build on clusters), in adapter or merged mode.

- adapter mode: LoRA enabled; each candidate is written to tmpfs as a PEFT folder under a fresh
  integer id, the prompts of up to ``max_loras`` candidates go in one engine pass, and every
  adapter is removed from vLLM and from disk after use. On the CPU build the LoRA products run
  through :mod:`essa.engines.vllm_cpu_lora` (vLLM's own CPU ops ran at 0.1-0.2 of plain speed).
- merged mode: the candidate's delta is added into the base weights, one candidate per pass, then
  the original weights are restored exactly (see :mod:`essa.engines.vllm_merged`).
- hybrid: both ready; a call with one candidate runs merged (plain speed), a call with several
  runs them together in adapter mode (K x B requests per pass keep the CPU busier than K passes
  of B). On the CPU build faster than merged in eager mode; with torch.compile (kept on for LoRA
  engines by vllm_cpu_lora) faster for several candidates of small batches, equal at B = 64, K = 8.
- auto: on the CPU build with dense weights hybrid in eager mode and merged with torch.compile;
  adapter where the base model is quantized (no dense weights to merge into), on GPUs, and with
  tensor parallelism.

The engine core runs in this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``): one process per MPI
rank and the model's weights are reachable for merged mode.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Sequence

from essa.engines.base import Completion, ContinuationScore, SamplingSettings
from essa.engines.lora_weights import AdapterFolders, as_lora_candidate, module_deltas

VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


def vllm_lora_rank(rank: int) -> int:
    """The smallest rank vLLM accepts that holds ``rank`` (vLLM takes only a fixed set)."""
    for allowed in VLLM_LORA_RANKS:
        if allowed >= rank:
            return allowed
    raise ValueError(f"LoRA rank {rank} exceeds vLLM's largest supported rank {VLLM_LORA_RANKS[-1]}")


def resolve_mode(mode: str, quantization: str, on_cpu: bool, tensor_parallel_size: int = 1,
                 eager: bool = False) -> str:
    """The concrete candidate mode for ``engine.mode``; impossible combinations fail here.

    ``auto`` on the CPU build with dense weights: hybrid in eager mode, merged with torch.compile
    (measured: benchmarks/RESULTS.md, "Own CPU LoRA product and hybrid mode" and "LoRA engines
    keep torch.compile")."""
    if mode in ("merged", "hybrid") and quantization != "none":
        raise ValueError(f"engine.mode={mode} needs dense base weights; model.quantization="
                         f"{quantization!r} works only with engine.mode=adapter")
    if mode in ("merged", "hybrid") and tensor_parallel_size > 1:
        raise ValueError(f"engine.mode={mode} does not support tensor_parallel_size > 1 yet; use "
                         "engine.mode=adapter")
    if mode != "auto":
        return mode
    if quantization != "none" or tensor_parallel_size > 1 or not on_cpu:
        return "adapter"
    return "hybrid" if eager else "merged"


class VLLMEngine:
    """vLLM with the base model loaded once; candidates applied per ``engine.mode``."""

    name = "vllm"

    def __init__(self, model_path: Path, model_cfg, engine_cfg, lora_rank: int = 8,
                 lora_modules: Sequence[str] = ("q_proj", "k_proj", "v_proj", "o_proj"),
                 both_modes: bool = False, planned_tokens: int | None = None):
        """``planned_tokens``: the most tokens this engine will generate (decides
        ``engine.enforce_eager: auto`` on the CPU build); None when unknown."""
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        if engine_cfg.kv_cache_gib > 0:  # read by the CPU worker when it sizes its KV cache
            os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(engine_cfg.kv_cache_gib)
        from vllm import LLM
        from vllm.platforms import current_platform

        from essa.engines.compile_choice import choose_eager
        from essa.models.dtype import resolve_dtype

        self.on_cpu = current_platform.is_cpu()
        self.dtype_choice = resolve_dtype(model_cfg.dtype)
        self.eager, self.eager_reason = choose_eager(engine_cfg.enforce_eager, self.on_cpu, planned_tokens,
                                                     self.dtype_choice.dtype)
        quant = model_cfg.quantization
        if quant == "int8":
            raise ValueError("model.quantization=int8 is not available in vLLM; use engine.backend="
                             "transformers (bitsandbytes 8-bit) or quantization int4/fp8")
        if quant == "int4" and self.on_cpu:
            raise ValueError("model.quantization=int4 (bitsandbytes) needs vLLM on a CUDA GPU; on the "
                             "CPU use engine.backend=transformers")
        self.mode = resolve_mode(engine_cfg.mode, quant, self.on_cpu, engine_cfg.tensor_parallel_size,
                                 self.eager)
        self.model_path = Path(model_path)
        self.max_loras = engine_cfg.max_loras
        kwargs: dict[str, Any] = {}
        if quant == "int4":
            kwargs["quantization"] = "bitsandbytes"
        elif quant == "fp8":
            kwargs["quantization"] = "fp8"
        # both_modes: LoRA enabled and merged weights ready, switchable with set_mode (tests, benchmarks).
        self.both_modes = (both_modes and quant == "none") or self.mode == "hybrid"
        self.lora_on = self.mode == "adapter" or self.both_modes
        if self.lora_on:
            if self.on_cpu:  # vLLM's CPU LoRA ops copy each token's adapter: see vllm_cpu_lora
                from essa.engines import vllm_cpu_lora
                vllm_cpu_lora.install()
                vllm_cpu_lora.forget_weights()
            # Only the adapter's modules carry LoRA: vLLM would otherwise wrap every linear layer
            # and run (zero) LoRA products through the MLP too.
            kwargs.update(enable_lora=True, max_lora_rank=vllm_lora_rank(lora_rank),
                          max_loras=self.max_loras, max_cpu_loras=self.max_loras,
                          lora_target_modules=list(lora_modules))
        self.llm = LLM(model=str(model_path), dtype=self.dtype_choice.dtype,
                       max_model_len=engine_cfg.max_model_len,
                       gpu_memory_utilization=engine_cfg.memory_fraction,
                       tensor_parallel_size=engine_cfg.tensor_parallel_size,
                       seed=engine_cfg.seed, enforce_eager=self.eager, **kwargs)
        self.tokenizer = self.llm.get_tokenizer()
        if self.dtype_choice.warning:
            logging.getLogger("essa").warning(self.dtype_choice.warning)
        self.folders = AdapterFolders(engine_cfg.adapter_dir or None) if self.lora_on else None
        self.merged = None
        if self.mode == "merged" or self.both_modes:
            from essa.engines.vllm_merged import MergedWeights
            model = self._driver_model()
            self.merged = MergedWeights(model, self.model_path, list(lora_modules), self.on_cpu)

    def describe(self) -> str:
        """One line for logs and the run directory: backend, dtype, compile and candidate mode."""
        return (f"vllm {self.dtype_choice.dtype} ({self.dtype_choice.reason}), "
                f"{'eager' if self.eager else 'compiled'} ({self.eager_reason}), mode {self.mode}")

    @property
    def candidates_per_pass(self) -> int:
        """Candidates one engine pass runs together: max_loras in adapter and hybrid mode, 1 merged."""
        return 1 if self.mode == "merged" else self.max_loras

    def set_mode(self, mode: str) -> None:
        """Switch between 'adapter', 'merged' and 'hybrid' (an engine built with both_modes)."""
        if mode != self.mode and not self.both_modes:
            raise ValueError(f"this engine was built for {self.mode!r} mode only")
        if mode not in ("adapter", "merged", "hybrid"):
            raise ValueError(f"engine mode {mode!r}; choose 'adapter', 'merged' or 'hybrid'")
        self.mode = mode

    def _driver_model(self):
        """The torch model inside this process's engine core (in-process mode only)."""
        models = self.llm.apply_model(lambda model: model)
        return models[0]

    def _params(self, sampling: SamplingSettings, **extra):
        from vllm import SamplingParams
        greedy = sampling.temperature <= 0
        return SamplingParams(max_tokens=sampling.max_tokens, temperature=sampling.temperature,
                              top_p=1.0 if greedy else sampling.top_p, n=sampling.n,
                              seed=None if greedy else sampling.seed, stop=sampling.stop or None,
                              **extra)

    # -- generation ---------------------------------------------------------------------------
    def generate(self, prompts: Sequence[str], candidates: Sequence[Any] = (None,),
                 sampling: SamplingSettings | None = None) -> list[list[list[Completion]]]:
        """Completions [candidate][prompt][sample]: every prompt under every candidate."""
        sampling = sampling or SamplingSettings()
        params = self._params(sampling)
        run = lambda reqs, lora: self.llm.generate(reqs, params, lora_request=lora, use_tqdm=False)
        outputs = self._per_candidate(list(prompts), list(candidates), run)
        return [[[Completion(o.text, len(o.token_ids)) for o in out.outputs] for out in per]
                for per in outputs]

    def score_continuations(self, prompts: Sequence[str], continuations: Sequence[str],
                            candidates: Sequence[Any] = (None,)) -> list[list[ContinuationScore]]:
        """Log-likelihood of each continuation after its prompt, via prompt log-probabilities."""
        from vllm.inputs import TokensPrompt
        requests, starts = [], []
        for prompt, cont in zip(prompts, continuations):
            head = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
            full = self.tokenizer(prompt + cont, add_special_tokens=False)["input_ids"]
            if full[:len(head)] != head:  # the boundary merged into one token: split explicitly
                full = head + self.tokenizer(cont, add_special_tokens=False)["input_ids"]
            requests.append(TokensPrompt(prompt_token_ids=full))
            starts.append(len(head))
        params = self._params(SamplingSettings(max_tokens=1), prompt_logprobs=0)
        run = lambda reqs, lora: self.llm.generate(reqs, params, lora_request=lora, use_tqdm=False)
        outputs = self._per_candidate(requests, list(candidates), run)
        scores = []
        for per in outputs:
            row = []
            for out, start in zip(per, starts):
                ids = out.prompt_token_ids
                total = sum(out.prompt_logprobs[i][ids[i]].logprob for i in range(start, len(ids)))
                row.append(ContinuationScore(logprob=float(total), num_tokens=len(ids) - start))
            scores.append(row)
        return scores

    def _per_candidate(self, requests: list, candidates: list, run) -> list[list]:
        """Run ``requests`` once per candidate, in the engine's mode; outputs [candidate][request]."""
        results: list[list | None] = [None] * len(candidates)
        if self.mode == "adapter" or (self.mode == "hybrid" and len(candidates) > 1):
            return self._adapter_passes(requests, candidates, run)
        if self.mode in ("merged", "hybrid"):
            try:
                for i, cand in enumerate(candidates):
                    if cand is None:
                        self.merged.restore()
                    else:  # replaces the previous candidate's weights directly
                        self.merged.apply(module_deltas(as_lora_candidate(cand)))
                    self._forget_cached_prompts()
                    results[i] = run(requests, None)
            finally:
                self.merged.restore()  # the base weights, exactly, after every call
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

    def _adapter_passes(self, requests: list, candidates: list, run) -> list[list]:
        """Adapter mode: up to max_loras candidates per engine pass; outputs [candidate][request].

        The CPU build's LoRA kernels are not batch-invariant: a candidate's greedy output can
        depend on how many requests share the pass (not on which other adapters are there).
        """
        results: list[list | None] = [None] * len(candidates)
        for start in range(0, len(candidates), self.max_loras):
            group = list(range(start, min(start + self.max_loras, len(candidates))))
            loras = {i: self._load_adapter(candidates[i]) for i in group}
            try:
                batch, lora_list = [], []
                for i in group:
                    batch += requests
                    lora_list += [loras[i][0] if loras[i] else None] * len(requests)
                outs = run(batch, lora_list)
                for j, i in enumerate(group):
                    results[i] = outs[j * len(requests):(j + 1) * len(requests)]
            finally:
                for entry in loras.values():
                    if entry:
                        request, folder, owned = entry
                        self.llm.llm_engine.remove_lora(request.lora_int_id)
                        if owned:
                            self.folders.remove(folder)
        return results

    def _load_adapter(self, candidate):
        """(LoRARequest, folder, we own the folder) for a candidate, or None for the base model."""
        if candidate is None:
            return None
        from vllm.lora.request import LoRARequest
        lora_id = self.folders.next_id()
        if isinstance(candidate, (str, Path)):
            from essa.adapters.peft_io import read_adapter
            read_adapter(candidate)  # a clear error for a bad folder before vLLM sees it
            folder, owned = Path(candidate), False
        else:
            folder, owned = self.folders.write(candidate, lora_id), True
        return LoRARequest(f"candidate-{lora_id}", lora_id, str(folder)), folder, owned

    def loaded_adapter_ids(self) -> set[int]:
        """Adapter ids vLLM holds now (empty between calls: every adapter is removed after use)."""
        if self.folders is None:
            return set()
        return set(self.llm.llm_engine.list_loras())

    def close(self) -> None:
        if self.folders is not None:
            self.folders.close()
        self.merged = None
        del self.llm
        if self.on_cpu and self.lora_on:
            from essa.engines import vllm_cpu_lora
            vllm_cpu_lora.forget_weights()  # a later engine may get the same tensor addresses
