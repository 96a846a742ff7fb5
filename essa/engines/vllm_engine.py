"""The vLLM engine (CPU build here, CUDA build on clusters).

The engine core runs in this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``): one process per MPI
rank, no extra spawn, and the model's weights are reachable for merged-mode candidates.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from essa.engines.base import Completion, SamplingSettings


class VLLMEngine:
    """vLLM with the base model loaded once."""

    name = "vllm"

    def __init__(self, model_path: Path, model_cfg, engine_cfg):
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        if model_cfg.quantization != "none":
            raise ValueError(f"model.quantization={model_cfg.quantization!r} is not supported by the "
                             f"vLLM engine yet; use 'none'")
        from vllm import LLM

        self.model_path = Path(model_path)
        self.llm = LLM(model=str(model_path), dtype=model_cfg.dtype,
                       max_model_len=engine_cfg.max_model_len,
                       gpu_memory_utilization=engine_cfg.memory_fraction,
                       tensor_parallel_size=engine_cfg.tensor_parallel_size,
                       seed=engine_cfg.seed,
                       enforce_eager=engine_cfg.enforce_eager)
        self.tokenizer = self.llm.get_tokenizer()

    def _params(self, sampling: SamplingSettings):
        from vllm import SamplingParams
        return SamplingParams(max_tokens=sampling.max_tokens, temperature=sampling.temperature,
                              top_p=sampling.top_p if sampling.temperature > 0 else 1.0,
                              n=sampling.n, seed=sampling.seed if sampling.temperature > 0 else None,
                              stop=sampling.stop or None)

    def generate(self, prompts: Sequence[str], candidates: Sequence[Any] = (None,),
                 sampling: SamplingSettings | None = None) -> list[list[list[Completion]]]:
        """Completions [candidate][prompt][sample]; only the base model (None) so far."""
        sampling = sampling or SamplingSettings()
        if any(c is not None for c in candidates):
            raise NotImplementedError("the vLLM engine does not apply candidates yet")
        outs = self.llm.generate(list(prompts), self._params(sampling), use_tqdm=False)
        per_prompt = [[Completion(o.text, len(o.token_ids)) for o in out.outputs] for out in outs]
        return [per_prompt for _ in candidates]

    def close(self) -> None:
        del self.llm
