"""The LoRA SFT warm start: the task's training split in, a PEFT adapter folder out.

Two trainers share the data, the batches and the LoRA initialisation (essa/sft/setup.py picks one):

- ``loop`` (the CPU default, here): a plain torch loop with the base model in float32 (bf16
  training on the CPU is slow and loses small updates);
- ``trl`` (the CUDA default, essa/sft/trl_trainer.py): TRL's SFTTrainer in bf16 autocast, with
  gradient checkpointing, micro-batches under a token budget, and QLoRA.

LoRA factors go on ``adapter.target_modules``, and AdamW trains them with a linear warm-up then a
constant learning rate. The result is a standard PEFT adapter folder (``adapter_config.json`` +
``adapter_model.safetensors``) plus ``sft_summary.json``, written atomically.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from essa.config import to_dict
from essa.config.schema import TaskConfig
from essa.sft.data import TokenizedExample, batch_indices, collate, tokenize_examples
from essa.sft.publish import publish_folder, write_summary
from essa.sft.recipe import MAX_GRAD_NORM, add_fresh_lora, lr_factor
from essa.data import load_task
from essa.models import resolve_model_path



@dataclass
class SFTResult:
    """What one SFT run produced and how it went."""

    adapter_dir: Path
    steps: int
    final_loss: float  # mean loss of the last few steps (one step's loss is noisy)
    losses: list[float]
    seconds: float
    examples: int  # training examples available to the sampler
    target_tokens: int  # answer tokens (the ones with a loss) seen over all steps
    config: dict = field(default_factory=dict)
    trainer: str = "loop"  # loop or trl (essa/sft/setup.py)
    setup: str = ""  # the resolved trainer, device and precision in words
    train_tokens: int = 0  # tokens of every sequence forwarded (prompts included, padding not)
    micro_batch_rows: int = 0  # sequences per forward pass
    peak_memory_bytes: int | None = None  # CUDA peak during training; None on the CPU

    def summary(self) -> dict:
        """The JSON-ready record written as ``sft_summary.json``."""
        out = asdict(self)
        out["adapter_dir"] = str(self.adapter_dir)
        return out


def load_lora_model(model_path: Path, adapter_cfg, seed: int):
    """The base model in float32 with fresh, seeded LoRA factors (B = 0, so it starts as the base)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(model_path), dtype=torch.float32)
    return add_fresh_lora(model, adapter_cfg, seed)


def train_steps(model, data: list[TokenizedExample], sft_cfg, seed: int, pad_id: int,
                progress: bool = True) -> tuple[list[float], int]:
    """Run ``sft_cfg.steps`` AdamW steps; return the per-step losses and the answer tokens seen."""
    from tqdm.auto import tqdm

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=sft_cfg.learning_rate, weight_decay=sft_cfg.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, sft_cfg.warmup_steps))
    model.train()
    losses, target_tokens = [], 0
    bar = tqdm(batch_indices(len(data), sft_cfg.steps, sft_cfg.batch_size, seed), desc="sft",
               unit="step", disable=not progress)
    for indices in bar:
        batch = collate([data[i] for i in indices], pad_id)
        # The model's own loss: shifted cross-entropy, mean over label tokens (answers + stop).
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, MAX_GRAD_NORM)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
        target_tokens += int((batch["labels"] != -100).sum())
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    return losses, target_tokens


def run_config_record(config) -> dict:
    """The config sections that shape the adapter (stored in the summary for provenance)."""
    full = to_dict(config)
    return {k: full[k] for k in ("seed", "model", "task", "adapter", "sft")}


def sft_task_config(config):
    """The task the warm start trains on: ``sft.dataset`` with default fields, else the run's task."""
    if not config.sft.dataset:
        return config.task
    return TaskConfig(dataset=config.sft.dataset, data_dir=config.task.data_dir,
                      train_split=config.task.train_split)


def train_sft(config, output: str | Path, progress: bool = True,
              extra_summary: dict | None = None) -> SFTResult:
    """Train the warm-start adapter of ``config`` (a RunConfig) and publish it at ``output``.

    ``output`` is replaced atomically: a reader sees the old folder or the complete new one.
    ``extra_summary`` entries are added to its ``sft_summary.json``.
    """
    from transformers import AutoTokenizer


    # 0: every core this process may use (under mpirun oneMKL would otherwise give it one)
    torch.set_num_threads(config.sft.threads or len(os.sched_getaffinity(0)))
    output = Path(output)
    t0 = time.time()
    model_path = resolve_model_path(config.model.path)
    tokenizer = AutoTokenizer.from_pretrained(str(model_path))
    task = load_task(sft_task_config(config))
    examples = task.split(config.task.train_split)
    if not examples:
        raise ValueError(f"task {task.name!r}: the {config.task.train_split!r} split is empty")
    if config.sft.source == "self":
        from essa.sft.self_answers import self_verified_examples
        examples = self_verified_examples(config, task, examples[: config.sft.self_prompts])
    examples = examples[: config.sft.max_examples]
    if task.reward == "ifeval" and not any(e.solution.strip() for e in examples):
        # its answers are constraint specs, not responses: there is nothing to imitate
        raise ValueError(f"task {task.name!r} has no reference responses to train on: use "
                         f"sft.source: self, sft.dataset with references (e.g. gsm8k), or adapter.init: fresh")
    data = tokenize_examples(tokenizer, examples, task.instruction, config.model.chat_template,
                             config.sft.max_length)
    if not any(x.num_target_tokens for x in data):
        raise ValueError(f"sft.max_length={config.sft.max_length} cuts every answer off its prompt; "
                         f"raise it")
    from essa.sft.setup import resolve_setup
    setup = resolve_setup(config.sft)
    if setup.trainer == "trl":
        from essa.sft.trl_trainer import train_with_trl
        out = train_with_trl(model_path, tokenizer, data, config, setup, progress)
        model, losses, target_tokens = out.model, out.losses, out.target_tokens
        extra = {"micro_batch_rows": out.micro_batch_rows, "peak_memory_bytes": out.peak_memory_bytes}
    else:
        model = load_lora_model(model_path, config.adapter, config.seed)
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        losses, target_tokens = train_steps(model, data, config.sft, config.seed, pad_id, progress)
        extra = {"micro_batch_rows": config.sft.batch_size}
    # both trainers walk the same seeded batches: the tokens forwarded follow from them
    batches = batch_indices(len(data), config.sft.steps, config.sft.batch_size, config.seed)
    extra["train_tokens"] = sum(len(data[i].input_ids) for step in batches for i in step)
    if not all(math.isfinite(x) for x in losses):
        raise FloatingPointError(f"SFT loss became non-finite ({losses[-5:]}); lower "
                                 f"sft.learning_rate (now {config.sft.learning_rate})")
    tail = losses[-min(5, len(losses)):]
    result = SFTResult(adapter_dir=output, steps=len(losses), final_loss=sum(tail) / len(tail),
                       losses=[round(x, 5) for x in losses], seconds=round(time.time() - t0, 1),
                       examples=len(data), target_tokens=target_tokens,
                       config=run_config_record(config), trainer=setup.trainer,
                       setup=setup.describe(), **extra)
    save_adapter(model, output, {**result.summary(), **(extra_summary or {})})
    return result


def save_adapter(model, output: Path, summary: dict) -> None:
    """Write the PEFT folder and its summary to a temporary folder, then move it into place."""
    tmp = output.parent / f".{output.name}.tmp-{time.time_ns()}"
    output.parent.mkdir(parents=True, exist_ok=True)
    try:
        model.save_pretrained(str(tmp), safe_serialization=True)
        write_summary(tmp, summary)
        publish_folder(tmp, output, overwrite=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone already unless saving failed
