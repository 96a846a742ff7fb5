"""Build the configured engine; a combination the backend cannot do fails here, at start-up."""

from __future__ import annotations

from essa.engines.base import SamplingSettings
from essa.models import resolve_model_path


def sampling_from_config(engine_cfg) -> SamplingSettings:
    """Decoding settings from an EngineConfig."""
    return SamplingSettings(max_tokens=engine_cfg.max_tokens, temperature=engine_cfg.temperature,
                            top_p=engine_cfg.top_p, seed=engine_cfg.seed)


def make_engine(model_cfg, engine_cfg, adapter_cfg=None, **kwargs):
    """The engine named by ``engine.backend``, with the base model loaded once.

    ``adapter_cfg`` (an AdapterConfig) tells the engine the LoRA rank and modules to expect;
    ``planned_tokens`` (vLLM) the most tokens it will generate, for ``engine.enforce_eager: auto``.
    """
    model_path = resolve_model_path(model_cfg.path)
    if engine_cfg.backend == "vllm":
        from essa.engines.vllm_engine import VLLMEngine
        if adapter_cfg is not None:
            kwargs.setdefault("lora_rank", adapter_cfg.rank)
            kwargs.setdefault("lora_modules", tuple(adapter_cfg.target_modules))
        return VLLMEngine(model_path, model_cfg, engine_cfg, **kwargs)
    if engine_cfg.backend == "transformers":
        from essa.engines.hf_engine import TransformersEngine
        return TransformersEngine(model_path, model_cfg, engine_cfg)  # no compile step: planned_tokens unused
    raise ValueError(f"engine.backend: {engine_cfg.backend!r}; choose 'vllm' or 'transformers'")
