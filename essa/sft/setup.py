"""Where and how the SFT warm start trains: trainer, device, precision, QLoRA, checkpointing.

``sft.trainer: auto`` keeps the CPU demo on the plain float32 loop (essa/sft/train.py) and sends a
CUDA node to TRL's SFTTrainer (essa/sft/trl_trainer.py) in bf16 autocast with gradient
checkpointing. Asking for QLoRA (``sft.quantization: nf4``) or bf16 picks the TRL trainer on any
device. :func:`memory_plan` is what ``essa-sft --dry-run`` prints and checks.
"""

from __future__ import annotations

from dataclasses import dataclass

from essa.config import ConfigError
from essa.models.dtype import Device, native_bf16, probe_device
from essa.sft.memory import (GIB, MemoryEstimate, TrainingShape, estimate_memory,
                             fitting_alternatives, micro_batch_rows, read_model_shape)


@dataclass(frozen=True)
class SFTSetup:
    """The resolved ``sft`` settings of one run (no 'auto' left)."""

    trainer: str  # loop or trl
    device: str  # cpu, cuda or cuda:N
    precision: str  # float32 or bf16
    quantization: str  # none or nf4
    gradient_checkpointing: bool
    reason: str  # why the device and precision, in words

    def describe(self) -> str:
        """One line for the log and the dry-run."""
        extras = [self.precision] + (["QLoRA nf4"] if self.quantization == "nf4" else [])
        if self.gradient_checkpointing:
            extras.append("gradient checkpointing")
        return f"SFT trainer {self.trainer} on {self.device} ({', '.join(extras)}; {self.reason})"


def resolve_setup(sft, dev: Device | None = None) -> SFTSetup:
    """Resolve the ``sft`` section against ``dev`` (the real device when None)."""
    dev = dev or probe_device(sft.device)
    if sft.device.startswith("cuda") and dev.kind != "cuda":
        raise ConfigError(f"sft.device: {sft.device} asked for, but this process sees no CUDA GPU")
    wants_trl = sft.quantization != "none" or sft.precision == "bf16"
    trainer = sft.trainer
    if trainer == "auto":
        trainer = "trl" if dev.kind == "cuda" or wants_trl else "loop"
    if trainer == "loop" and sft.device.startswith("cuda"):
        raise ConfigError("sft.trainer: loop trains on the CPU; use trl (or auto) on a GPU")
    device = "cpu" if trainer == "loop" or dev.kind != "cuda" else (
        sft.device if sft.device.startswith("cuda") else "cuda")
    if trainer == "loop":
        precision, why = "float32", "the loop trainer (bf16 training on a CPU loses small updates)"
    else:
        native, why = native_bf16(dev)
        precision = ("bf16" if native else "float32") if sft.precision == "auto" else sft.precision
    checkpointing = device != "cpu" if sft.gradient_checkpointing == "auto" else bool(sft.gradient_checkpointing)
    return SFTSetup(trainer, device, precision, sft.quantization, checkpointing, why)


def training_shape(config, setup: SFTSetup) -> TrainingShape:
    """The estimate's view of the run: the longest sequences, in micro-batches under the budget."""
    sft = config.sft
    rows = micro_batch_rows(sft.batch_size, sft.max_length, sft.max_batch_tokens) \
        if setup.trainer == "trl" else sft.batch_size
    return TrainingShape(precision=setup.precision, quantization=setup.quantization,
                         gradient_checkpointing=setup.gradient_checkpointing, micro_batch_rows=rows,
                         sequence_tokens=sft.max_length, lora_rank=config.adapter.rank,
                         lora_targets=tuple(config.adapter.target_modules))


@dataclass(frozen=True)
class MemoryPlan:
    """The estimate, the memory it is checked against (None: unknown), and what would fit."""

    estimate: MemoryEstimate
    budget: int | None
    budget_source: str
    alternatives: list[str]

    @property
    def fits(self) -> bool | None:
        return None if self.budget is None else self.estimate.total <= self.budget

    def lines(self) -> list[str]:
        out = ["memory estimate (peak of one step):", *self.estimate.lines()]
        if self.budget is None:
            out.append(f"  device memory: unknown ({self.budget_source}); set sft.device_memory_gib "
                       f"to check the plan against a GPU")
            return out
        verdict = "fits" if self.fits else "DOES NOT FIT"
        out.append(f"  device memory {self.budget / GIB:.1f} GiB ({self.budget_source}): {verdict}")
        if not self.fits:
            out.append("  would fit: " + ("; ".join(self.alternatives) if self.alternatives else
                                          "none of sft.gradient_checkpointing=true, sft.quantization=nf4, "
                                          "a smaller sft.max_batch_tokens or sft.max_length; use a "
                                          "bigger GPU or a smaller model"))
        return out


def device_memory(sft, setup: SFTSetup) -> tuple[int | None, str]:
    """(bytes, where the figure comes from) of the training device; None when unknown."""
    if sft.device_memory_gib > 0:
        return int(sft.device_memory_gib * GIB), "sft.device_memory_gib"
    if setup.device.startswith("cuda"):
        import torch
        if not torch.cuda.is_available():  # a GPU plan made on a node without one
            return None, "no GPU visible here"
        index = int(setup.device.split(":")[1]) if ":" in setup.device else 0
        props = torch.cuda.get_device_properties(index)
        return int(props.total_memory), props.name
    return None, "training on the CPU"


def memory_plan(config, setup: SFTSetup, model_path) -> MemoryPlan:
    """The dry-run's memory plan of ``config`` on ``setup`` for the model at ``model_path``."""
    shape = read_model_shape(model_path)
    train = training_shape(config, setup)
    estimate = estimate_memory(shape, train)
    budget, source = device_memory(config.sft, setup)
    alternatives = [] if budget is None or estimate.total <= budget else \
        fitting_alternatives(shape, train, budget)
    return MemoryPlan(estimate, budget, source, alternatives)
