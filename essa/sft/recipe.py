"""What both SFT trainers share: the LoRA factors, the learning-rate schedule, the gradient clip.

The loop trainer (essa/sft/train.py) and the TRL trainer (essa/sft/trl_trainer.py) take these from
here, so that on the same data they train the same adapter.
"""

from __future__ import annotations

import torch

from essa.config import ConfigError

MAX_GRAD_NORM = 1.0  # clip: a few long answers in a batch of 8 must not blow up a step


def add_fresh_lora(model, adapter_cfg, seed: int):
    """``model`` with fresh LoRA factors of the ``adapter`` section: lora_A drawn from ``seed``,
    B = 0 (it starts as the base). Every trainer initialises through here, so they start alike."""
    from peft import get_peft_model
    check_target_modules(model, adapter_cfg.target_modules)
    torch.manual_seed(seed)  # lora_A's random init
    return get_peft_model(model, lora_config(adapter_cfg))  # factors float32 (autocast_adapter_dtype)


def lora_config(adapter_cfg):
    """peft's LoraConfig of the ``adapter`` section: rank, alpha, target modules, no dropout."""
    from peft import LoraConfig
    return LoraConfig(r=adapter_cfg.rank, lora_alpha=adapter_cfg.alpha,
                      target_modules=list(adapter_cfg.target_modules), lora_dropout=0.0,
                      bias="none", task_type="CAUSAL_LM")


def lr_factor(step: int, warmup_steps: int) -> float:
    """Multiplier of the learning rate at 0-based ``step``: linear warm-up, then constant 1."""
    if step >= warmup_steps:
        return 1.0
    return (step + 1) / (warmup_steps + 1)  # never 0: every step moves the weights


def check_target_modules(model, target_modules: list[str]) -> None:
    """Raise ConfigError naming the targets the model lacks and the linear layers it has."""
    linear_names = {name.rsplit(".", 1)[-1] for name, m in model.named_modules()
                    if isinstance(m, torch.nn.Linear)}
    missing = [t for t in target_modules if t not in linear_names]
    if missing:
        raise ConfigError(f"adapter.target_modules: {missing} not found among the model's linear "
                          f"layers; it has {sorted(linear_names)}")
