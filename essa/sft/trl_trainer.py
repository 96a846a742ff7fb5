"""The SFT warm start through TRL's SFTTrainer: the GPU path (bf16 autocast, gradient
checkpointing, QLoRA), also runnable on the CPU.

It trains on exactly what the loop trainer does: the same tokenized examples (prompt masked out of
the loss through a ``labels`` column TRL uses as is), the same batches in the same order (the
loop's seeded :func:`essa.sft.data.batch_indices`, laid out in order and read sequentially), the
same LoRA initialisation (seeded before ``get_peft_model``), AdamW with the same warm-up and
gradient clipping. What changes is how a step is computed: micro-batches under
``sft.max_batch_tokens`` with gradient accumulation (transformers normalises the loss by the
step's label tokens, so a step's loss equals the whole batch's), bf16 autocast with float32 LoRA
factors, activation recomputation, and a 4-bit base under QLoRA.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass

import torch

from essa.sft.data import TokenizedExample, batch_indices
from essa.sft.memory import micro_batch_rows
from essa.sft.setup import SFTSetup
from essa.sft.recipe import MAX_GRAD_NORM, add_fresh_lora, lr_factor


@dataclass
class TrlOutcome:
    """What the TRL run reports back to :func:`essa.sft.train.train_sft`."""

    model: object  # the trained peft model
    losses: list[float]
    target_tokens: int
    micro_batch_rows: int
    peak_memory_bytes: int | None


def load_base(model_path, setup: SFTSetup):
    """The base model on the setup's device: bf16 or float32, or 4-bit nf4 under QLoRA."""
    from transformers import AutoModelForCausalLM

    dtype = torch.bfloat16 if setup.precision == "bf16" else torch.float32
    kwargs = {"dtype": dtype}
    if setup.quantization == "nf4":
        from transformers import BitsAndBytesConfig
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype)
        kwargs["device_map"] = {"": setup.device}
    model = AutoModelForCausalLM.from_pretrained(str(model_path), **kwargs)
    if setup.quantization == "none":
        model.to(setup.device)
    return model


def lora_model(model_path, adapter_cfg, seed: int, setup: SFTSetup):
    """The base with fresh LoRA factors, initialised as the loop trainer initialises them."""
    from peft import prepare_model_for_kbit_training

    model = load_base(model_path, setup)
    if setup.quantization == "nf4":
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=setup.gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False})
    return add_fresh_lora(model, adapter_cfg, seed)


def ordered_rows(data: list[TokenizedExample], sft_cfg, seed: int) -> list[TokenizedExample]:
    """Every step's examples in step order: read sequentially, they are the loop's batches."""
    return [data[i] for step in batch_indices(len(data), sft_cfg.steps, sft_cfg.batch_size, seed)
            for i in step]


def train_with_trl(model_path, tokenizer, data: list[TokenizedExample], config, setup: SFTSetup,
                   progress: bool = True) -> TrlOutcome:
    """Run ``config.sft.steps`` optimizer steps with TRL's SFTTrainer; return the trained model."""
    from datasets import Dataset
    from transformers import TrainerCallback
    from transformers.trainer_callback import PrinterCallback
    from trl import SFTConfig, SFTTrainer

    sft = config.sft
    longest = max(len(x.input_ids) for x in data)
    rows = micro_batch_rows(sft.batch_size, longest, sft.max_batch_tokens)
    model = lora_model(model_path, config.adapter, config.seed, setup)
    rows_in_order = ordered_rows(data, sft, config.seed)
    columns = {"input_ids": [x.input_ids for x in rows_in_order], "labels": [x.labels for x in rows_in_order]}
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=sft.learning_rate, weight_decay=sft.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, sft.warmup_steps))

    losses: list[float] = []

    class StepLosses(TrainerCallback):
        """Collects each step's loss and shows the loop trainer's progress bar (TRL's own bar
        prints every log dict)."""

        def on_train_begin(self, args, state, control, **kwargs):
            from tqdm.auto import tqdm
            self.bar = tqdm(total=sft.steps, desc="sft", unit="step", disable=not progress)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                losses.append(float(logs["loss"]))
                self.bar.update(1)
                self.bar.set_postfix(loss=f"{losses[-1]:.3f}")

        def on_train_end(self, args, state, control, **kwargs):
            self.bar.close()

    if setup.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory(prefix="essa-sft-trl-") as scratch:
        args = SFTConfig(
            output_dir=scratch, max_steps=sft.steps, per_device_train_batch_size=rows,
            gradient_accumulation_steps=sft.batch_size // rows, learning_rate=sft.learning_rate,
            max_grad_norm=MAX_GRAD_NORM, train_sampling_strategy="sequential",
            max_length=sft.max_length, bf16=setup.precision == "bf16",
            use_cpu=setup.device == "cpu", gradient_checkpointing=setup.gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False}, logging_steps=1,
            save_strategy="no", report_to="none", disable_tqdm=True,
            dataloader_pin_memory=False, seed=config.seed, data_seed=config.seed)
        trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_dict(columns),
                             processing_class=tokenizer, optimizers=(optimizer, schedule),
                             callbacks=[StepLosses()])
        trainer.remove_callback(PrinterCallback)  # it prints every log dict
        trainer.train()
    peak = torch.cuda.max_memory_allocated() if setup.device.startswith("cuda") else None
    return TrlOutcome(model=trainer.model, losses=losses,
                      target_tokens=sum(x.num_target_tokens for x in rows_in_order),
                      micro_batch_rows=rows, peak_memory_bytes=peak)
