"""The GRPO baseline: TRL's GRPOTrainer on ESSA's model, starting adapter, prompts and reward.

What is the same as ``essa-train``, so that ``essa compare`` compares methods and not set-ups:

- the base model (``model.path``), held in float32 on the CPU, as the SFT warm start trains it;
- the starting adapter: ``adapter.init: sft`` reuses the cached warm start
  (:func:`essa.sft.ensure_warm_start`, trained once if missing), a folder is loaded as it is, and both
  are trained on as LoRA factors; ``fresh`` is a new LoRA with the adapter section's rank, alpha and
  target modules (B = 0: it starts as the base model);
- the training split and the prompts (:func:`essa.data.build_prompts`, chat template included);
- the reward: :func:`essa.rewards.get_reward` of the task, the function ESSA's accuracy fitness calls;
- validation and test accuracy: greedy, ``engine.max_tokens`` new tokens, the first
  ``runtime.eval_items`` / ``runtime.test_items`` items of the split, scored by
  :func:`essa.evaluation.evaluate.score_completions` with that reward;
- the run directory: ``config.yaml``, ``run.log``, ``metrics.jsonl`` (validation records with the
  keys essa-train writes: ``wall_time`` is training seconds with evaluation excluded,
  ``tokens_total`` the completion tokens sampled so far), ``summary.json``, ``adapter_final/``.

GRPO itself: every step samples ``grpo.num_generations`` completions (temperature
``grpo.temperature``) for each of ``grpo.prompts_per_step`` training prompts, scores them with the
reward, and takes one AdamW step on the LoRA factors with group-normalised advantages (TRL's loss).
Generation uses transformers in-process (``use_vllm=False``); everything runs on the CPU.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import TrainerCallback

from essa.atomic import atomic_write
from essa.data import build_prompts
from essa.data import build_prompts, load_task
from essa.evaluation.evaluate import score_completions
from essa.models import resolve_model_path
from essa.rewards import get_reward
from essa.rundir import MetricsWriter
from essa.sft import ensure_warm_start
from essa.sft.data import end_of_turn_id
from essa.sft.evaluate import hf_greedy_completions
from essa.sft.train import load_lora_model

log = logging.getLogger("essa")


@dataclass
class TokenCount:
    """Completion tokens sampled for training so far (counted where the reward sees them)."""

    total: int = 0


# ---- the pieces ESSA shares ----------------------------------------------------------------------


def starting_adapter_folder(config) -> Path | None:
    """The PEFT folder GRPO starts from (None: a fresh LoRA), as ``adapter.init`` says."""
    init = config.adapter.init
    if init == "fresh":
        return None
    if init == "sft":
        return Path(ensure_warm_start(config))
    folder = Path(init).expanduser()
    if not (folder / "adapter_config.json").is_file():
        raise FileNotFoundError(f"adapter.init: {folder} is not a PEFT adapter folder (no "
                                f"adapter_config.json); use 'sft', 'fresh' or an adapter folder")
    return folder


def load_policy(config, model_path: Path):
    """(trainable peft model in float32, description of where its adapter came from)."""
    folder = starting_adapter_folder(config)
    if folder is None:
        return load_lora_model(model_path, config.adapter, config.seed), "fresh"
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(str(model_path), dtype=torch.float32)
    return PeftModel.from_pretrained(base, str(folder), is_trainable=True), str(folder)


def essa_reward_func(reward, counter: TokenCount, name: str):
    """ESSA's reward as a TRL reward function: ``completions`` and the ``answer`` and ``question``
    columns in, floats out.

    It also counts the sampled completion tokens (``completion_ids``, end-of-turn token included,
    as the engines count them).
    """
    def reward_func(prompts, completions, completion_ids, answer, question, **_):
        texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]
        counter.total += sum(len(ids) for ids in completion_ids)
        # the question text, as ESSA's workers pass it (TRL's ``prompts`` are chat-templated)
        return [float(x) for x in reward(texts, list(answer), prompts=list(question))]

    reward_func.__name__ = name  # TRL names its reward metrics after it
    return reward_func


class GreedyScorer:
    """Greedy accuracy of a (peft) model on the first items of a split, as essa-train scores it."""

    def __init__(self, config, task, tokenizer, reward):

        self.config, self.task, self.tokenizer, self.reward = config, task, tokenizer, reward
        self.stop_id = end_of_turn_id(tokenizer, config.model.chat_template)
        # A chat-templated prompt carries its special tokens; a plain one gets the tokenizer's.
        self.plain = not (config.model.chat_template and getattr(tokenizer, "chat_template", None))

    def accuracy(self, model, split: str, limit: int) -> tuple[float, int]:
        """(accuracy, items) on ``split[:limit]``; the model's train/eval mode is restored."""

        examples = self.task.split(split)[:limit]
        prompts = build_prompts(self.tokenizer, examples, self.task.instruction,
                                self.config.model.chat_template)
        was_training = model.training
        try:
            completions = hf_greedy_completions(model, self.tokenizer, prompts,
                                                self.config.engine.max_tokens, self.stop_id,
                                                add_special_tokens=self.plain)
        finally:
            model.train(was_training)
        scores = score_completions(self.reward, [[c] for c in completions], examples)
        return sum(s[0] for s in scores) / max(len(scores), 1), len(examples)


# ---- the trainer callback: clock, budget, validation, metrics --------------------------------------


class RunRecorder(TrainerCallback):
    """Keeps the training clock (evaluation excluded), stops at the wall-time budget, validates every
    ``grpo.eval_every`` steps and at the last one, and writes the metrics records."""

    def __init__(self, config, model, scorer: GreedyScorer, metrics, tokens: TokenCount):
        self.config, self.settings = config, config.grpo
        self.model, self.scorer, self.metrics, self.tokens = model, scorer, metrics, tokens
        self.t_start: float | None = None
        self.eval_seconds = 0.0
        self.final_seconds: float | None = None
        self.logged_tokens = 0
        self.stop_reason = "steps"
        self.last_reward: float | None = None

    def training_seconds(self) -> float:
        """Seconds since training began, less the time spent evaluating."""
        if self.t_start is None:
            return 0.0
        return time.time() - self.t_start - self.eval_seconds

    def validate(self, generation: int) -> float | None:
        """Validation accuracy now; generation -1 is the starting point (the records essa-train writes)."""
        split = self.config.task.validation_split
        if not split:
            return None
        wall = self.training_seconds()
        t0 = time.time()
        accuracy, n = self.scorer.accuracy(self.model, split, self.config.runtime.eval_items)
        if self.t_start is not None:
            self.eval_seconds += time.time() - t0
        self.metrics.write({"generation": generation, "phase": "validation", "val_accuracy": accuracy,
                            "val_items": n, "wall_time": round(wall, 3),
                            "tokens_total": self.tokens.total})
        log.info("step %d  validation accuracy of the %s: %.2f%% (%d items)", max(generation, 0),
                 "start" if generation < 0 else "policy", 100 * accuracy, n)
        return accuracy

    def on_train_begin(self, args, state, control, **kwargs):
        self.t_start = time.time()

    def on_step_end(self, args, state, control, **kwargs):
        step, budget = state.global_step, self.settings.max_wall_time_s
        if budget and self.training_seconds() >= budget:
            control.should_training_stop = True
            self.stop_reason = "max_wall_time_s"
        last = control.should_training_stop or step >= state.max_steps
        if last or (self.settings.eval_every and step % self.settings.eval_every == 0):
            self.validate(step)
        if last and self.final_seconds is None:
            self.final_seconds = self.training_seconds()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or "reward" not in logs:  # the end-of-training summary log has no reward
            return
        step = state.global_step
        tokens, self.logged_tokens = self.tokens.total - self.logged_tokens, self.tokens.total
        self.last_reward = logs.get("reward")
        rec = {"generation": step, "phase": "train", "step": step, "reward_mean": logs.get("reward"),
               "reward_std": logs.get("reward_std"), "loss": logs.get("loss"), "kl": logs.get("kl"),
               "learning_rate": logs.get("learning_rate"), "tokens": tokens,
               "tokens_total": self.tokens.total, "wall_time": round(self.training_seconds(), 3)}
        self.metrics.write(rec)
        log.info("step %d/%d  reward %.3f (std %.3f)  loss %s  kl %s  %d tokens  %.1f s", step,
                 state.max_steps, _or_nan(rec["reward_mean"]), _or_nan(rec["reward_std"]),
                 _fmt(rec["loss"]), _fmt(rec["kl"]), tokens, rec["wall_time"])


def _or_nan(value) -> float:
    return float("nan") if value is None else float(value)


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.4g}"


# ---- the run ---------------------------------------------------------------------------------------


def grpo_arguments(config, run_dir: Path, progress: bool):
    """TRL's GRPOConfig from the grpo section (one AdamW step per sampled batch, CPU, no saving)."""
    from trl import GRPOConfig

    g = config.grpo
    return GRPOConfig(
        output_dir=str(run_dir / "trainer"),
        max_steps=g.steps,
        # TRL counts completions per device batch: prompts_per_step groups of num_generations.
        per_device_train_batch_size=g.prompts_per_step * g.num_generations,
        gradient_accumulation_steps=1,
        num_generations=g.num_generations,
        max_completion_length=g.max_completion_length or config.engine.max_tokens,
        temperature=g.temperature,
        learning_rate=g.learning_rate,
        lr_scheduler_type=g.lr_scheduler,
        warmup_steps=0,
        beta=g.beta,
        use_vllm=False,
        use_cpu=True,
        bf16=False,
        fp16=False,
        gradient_checkpointing=False,  # a small model on the CPU: recomputing costs more than it saves
        logging_steps=g.log_every,
        save_strategy="no",
        report_to="none",
        disable_tqdm=not progress,
        dataloader_pin_memory=False,
        seed=config.seed,
    )


def run_grpo(config, run_dir: str | Path, progress: bool = False) -> dict:
    """Train with GRPO into ``run_dir`` (config.yaml already there); return the summary it writes."""
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import GRPOTrainer


    run_dir = Path(run_dir)
    cfg, g = config, config.grpo
    if g.threads:
        torch.set_num_threads(g.threads)
    model_path = resolve_model_path(cfg.model.path)
    tokenizer = AutoTokenizer.from_pretrained(str(model_path))
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    task = load_task(cfg.task)
    train = task.split(cfg.task.train_split)
    if not train:
        raise ValueError(f"task {task.name!r}: the {cfg.task.train_split!r} split is empty")
    reward = get_reward(task.reward, **cfg.task.reward_options)
    tokens = TokenCount()
    dataset = Dataset.from_dict({
        "prompt": build_prompts(tokenizer, train, task.instruction, cfg.model.chat_template),
        "answer": [e.answer for e in train], "question": [e.question for e in train]})

    model, start = load_policy(cfg, model_path)
    metrics = MetricsWriter(run_dir / "metrics.jsonl")
    recorder = RunRecorder(cfg, model, GreedyScorer(cfg, task, tokenizer, reward), metrics, tokens)
    trainer = GRPOTrainer(model=model, reward_funcs=[essa_reward_func(reward, tokens, f"essa_{task.reward}")],
                          args=grpo_arguments(cfg, run_dir, progress), train_dataset=dataset,
                          processing_class=tokenizer, callbacks=[recorder])
    from transformers.trainer_callback import PrinterCallback
    trainer.remove_callback(PrinterCallback)  # it prints every log dict; run.log has our lines
    log.info("GRPO: %s from %s; %d steps of %d prompts x %d completions (<= %d tokens), lr %g, beta %g, "
             "budget %s; reward %s; %d training prompts", model_path.name, start, g.steps,
             g.prompts_per_step, g.num_generations, trainer.args.max_completion_length,
             g.learning_rate, g.beta, f"{g.max_wall_time_s:g} s" if g.max_wall_time_s else "none",
             task.reward, len(train))

    test_start = _test_accuracy(cfg, task, recorder.scorer, model)  # before any training
    recorder.validate(-1)
    trainer.train()
    try:
        (run_dir / "trainer").rmdir()  # TRL's output_dir: empty, nothing is saved there
    except OSError:
        pass

    final_dir = run_dir / "adapter_final"
    # Only the trained adapter: with beta > 0 TRL keeps a frozen copy named "ref" beside it.
    model.save_pretrained(str(final_dir), selected_adapters=["default"])
    test = {}
    if test_start is not None:
        test_final = _test_accuracy(cfg, task, recorder.scorer, model)
        test = {"items": test_start[1], "accuracy": {"start": test_start[0], "final": test_final[0]}}
        metrics.write({"generation": trainer.state.global_step, "phase": "test",
                       "test_items": test_start[1], "test_accuracy_start": test_start[0],
                       "test_accuracy_final": test_final[0]})
    wall = recorder.final_seconds if recorder.final_seconds is not None else recorder.training_seconds()
    summary = {"method": "grpo", "steps": trainer.state.global_step, "tokens": tokens.total,
               "wall_time": round(wall, 3), "stopped_by": recorder.stop_reason,
               "start_adapter": start, "last_train_reward": recorder.last_reward,
               "adapters": {"final": str(final_dir)}, "test": test}
    atomic_write(run_dir / "summary.json", json.dumps(summary, indent=1))
    log.info("summary: %d steps (stopped by %s), %d tokens, %.1f s of training; test accuracy %s; "
             "adapter in %s", summary["steps"], recorder.stop_reason, tokens.total, wall,
             ", ".join(f"{k} {v:.3f}" for k, v in test.get("accuracy", {}).items()) or "skipped",
             final_dir)
    return summary


def _test_accuracy(config, task, scorer: GreedyScorer, model) -> tuple[float, int] | None:
    """(accuracy, items) on the first runtime.test_items test items; None when there are none."""
    split, n = config.task.test_split, config.runtime.test_items
    if not n or not split or not task.splits.get(split):
        return None
    return scorer.accuracy(model, split, n)
