"""Build the configured engine; a combination the backend cannot do fails here, at start-up."""

from __future__ import annotations

from essa.engines.base import SamplingSettings
from essa.engines.stop_rules import rule_for_reward
from essa.models import resolve_model_path


def sampling_from_config(engine_cfg, reward: str | None = None,
                         reward_options: dict | None = None) -> SamplingSettings:
    """Decoding settings from an EngineConfig; ``reward`` (the task's reward name, None when
    generations are scored otherwise, e.g. by a reward model) and its options pick the stop rule."""
    return SamplingSettings(max_tokens=engine_cfg.max_tokens, temperature=engine_cfg.temperature,
                            top_p=engine_cfg.top_p, seed=engine_cfg.seed,
                            stop_rule=stop_rule_for(engine_cfg, reward, reward_options))


def stop_rule_for(engine_cfg, reward: str | None, reward_options: dict | None = None) -> str | None:
    """The stop rule of ``reward`` when ``engine.stop_at_answer`` is on (essa/engines/stop_rules.py);
    None for a reward without one (ifeval, a user's module:function) or with the option off."""
    return rule_for_reward(reward, reward_options) if engine_cfg.stop_at_answer else None


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
