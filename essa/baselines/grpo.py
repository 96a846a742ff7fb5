"""The GRPO baseline: TRL's GRPOTrainer on ESSA's model, starting adapter, prompts and reward.

What is the same as ``essa-train``, so that ``essa compare`` compares methods and not set-ups:

- the base model (``model.path``);
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

Where it runs (``grpo.device``, decided by :func:`decide_grpo_setup`, logged as one line):

- CPU (the demo; ``auto`` without a visible GPU): the base in float32, no autocast, completions
  sampled with transformers in-process (``use_vllm=False``), no gradient checkpointing, one process.
- CUDA: the base in bf16 with bf16 autocast where the GPU computes bf16 (LoRA factors stay float32,
  peft's ``autocast_adapter_dtype``; float32 on older GPUs), gradient checkpointing (``auto``),
  and completions from TRL's colocated vLLM engine (``vllm_mode="colocate"``, taking
  ``grpo.vllm_gpu_memory_utilization`` of each GPU) when vllm is installed, else transformers.
  Several GPUs: ``accelerate launch``, one process per GPU (launch/slurm/essa-grpo.sbatch); a
  step's prompts_per_step x num_generations completions are split over the processes (same
  algorithm, more GPUs). Only the main process writes the run directory and scores validation and
  test items; the others wait for it at their next collective (transformers' ``ddp_timeout``, 30
  minutes, bounds that wait). The SFT warm start must then be cached beforehand.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import TrainerCallback

from essa.atomic import atomic_write
from essa.config import ConfigError
from essa.data import build_prompts, load_task
from essa.evaluation.evaluate import score_completions
from essa.models import resolve_model_path
from essa.models.dtype import Device, native_bf16, probe_device
from essa.rewards import get_reward
from essa.rundir import MetricsWriter
from essa.sft import ensure_warm_start
from essa.sft.data import end_of_turn_id
from essa.sft.evaluate import hf_greedy_completions
from essa.sft.recipe import add_fresh_lora

log = logging.getLogger("essa")


@dataclass
class TokenCount:
    """Completion tokens sampled for training so far (counted where the reward sees them)."""

    total: int = 0


# ---- where and how it trains ------------------------------------------------------------------------


@dataclass(frozen=True)
class GRPOSetup:
    """The training set-up :func:`decide_grpo_setup` chose for this process."""

    device: str  # "cpu" or "cuda:K": where the policy lives
    dtype: str  # the base model's weights: "float32" or "bfloat16" (LoRA factors are float32)
    bf16: bool  # bf16 autocast (TRL's bf16 flag)
    generation: str  # "transformers" or "vllm" (TRL's colocate mode)
    gradient_checkpointing: bool
    vllm_gpu_memory_utilization: float = 0.3
    processes: int = 1
    why: str = ""  # the device facts and choices behind it, in words

    @property
    def use_cpu(self) -> bool:
        return self.device == "cpu"

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)

    def describe(self) -> str:
        """One line for run.log and ``essa-grpo --check``."""
        precision = ("base bfloat16, bf16 autocast, LoRA factors float32" if self.bf16
                     else f"{self.dtype}")
        generation = (f"vllm (colocate, {self.vllm_gpu_memory_utilization:.0%} of GPU memory)"
                      if self.generation == "vllm" else "transformers")
        return (f"{self.device}, {precision}; generation {generation}; gradient checkpointing "
                f"{'on' if self.gradient_checkpointing else 'off'}; {self.processes} process"
                f"{'es' if self.processes > 1 else ''} ({self.why})")


def decide_grpo_setup(settings, device: Device, vllm_available: bool, processes: int = 1,
                      local_rank: int = 0) -> GRPOSetup:
    """The set-up from the ``grpo`` section and the facts of this process: its ``device``
    (:func:`essa.models.dtype.probe_device`), whether vllm is installed, and, under ``accelerate
    launch``, the number of processes and this one's local rank. Raises ConfigError naming the field
    when the section asks for what is not there."""
    requested, why = settings.device, []
    completions = settings.prompts_per_step * settings.num_generations
    if completions % processes:
        raise ConfigError(f"grpo.prompts_per_step: a step's {settings.prompts_per_step} x "
                          f"{settings.num_generations} completions do not split evenly over "
                          f"{processes} processes")
    if requested == "cpu" or (requested == "auto" and device.kind != "cuda"):
        if settings.generation == "vllm":
            where = "grpo.device is cpu" if requested == "cpu" else "this process sees no GPU"
            raise ConfigError(f"grpo.generation: vllm needs a CUDA GPU (TRL's colocated vLLM engine) "
                              f"and {where}; use grpo.generation auto or transformers")
        return GRPOSetup("cpu", "float32", False, "transformers",
                         _checkpointing(settings.gradient_checkpointing, on_cuda=False),
                         settings.vllm_gpu_memory_utilization, processes, "the CPU path trains in float32")
    if device.kind != "cuda":
        raise ConfigError(f"grpo.device: {requested} but this process sees no CUDA GPU; use auto or cpu")
    index = requested.partition(":")[2]
    if processes > 1 and index:
        raise ConfigError(f"grpo.device: {requested} picks one GPU for a single process; under "
                          "accelerate launch every process trains on its own local GPU: use cuda or auto")
    gpu = local_rank if processes > 1 else int(index or 0)
    bf16, reason = native_bf16(device)
    why.append(reason)
    generation = "transformers"
    if settings.generation in ("auto", "vllm"):
        obstacle = ""
        if not vllm_available:
            obstacle = "vllm is not installed"
        elif gpu != 0 and processes == 1:
            # TRL starts the colocated engine on the LOCAL_RANK GPU: cuda:0 in a process of its own.
            obstacle = (f"TRL's colocated vLLM engine would run on cuda:0, not {requested} (set "
                        f"CUDA_VISIBLE_DEVICES={gpu} and grpo.device cuda instead)")
        if not obstacle:
            generation = "vllm"
        elif settings.generation == "vllm":
            raise ConfigError(f"grpo.generation: vllm, but {obstacle}; use grpo.generation auto or "
                              "transformers")
        else:
            why.append(f"transformers generation: {obstacle}")
    return GRPOSetup(f"cuda:{gpu}", "bfloat16" if bf16 else "float32", bf16, generation,
                     _checkpointing(settings.gradient_checkpointing, on_cuda=True),
                     settings.vllm_gpu_memory_utilization,
                     processes, "; ".join(why))


def _checkpointing(value, on_cuda: bool) -> bool:
    """grpo.gradient_checkpointing: true / false (YAML's on / off too), or auto: on for CUDA."""
    if value == "auto":
        return on_cuda
    return value is True or value == "on"


def launch_ranks(environ=None) -> tuple[int, int, int]:
    """(global rank, local rank, number of processes) of this process: what ``accelerate launch``
    (torchrun) puts in the environment; (0, 0, 1) in a process of its own."""
    env = os.environ if environ is None else environ
    return (int(env.get("RANK") or 0), int(env.get("LOCAL_RANK") or 0),
            int(env.get("WORLD_SIZE") or 1))


def probe_grpo_setup(config) -> GRPOSetup:
    """:func:`decide_grpo_setup` for this process: its device, vllm and launch ranks."""
    _, local_rank, processes = launch_ranks()
    return decide_grpo_setup(config.grpo, probe_device(config.grpo.device),
                             importlib.util.find_spec("vllm") is not None, processes, local_rank)


# ---- the pieces ESSA shares ----------------------------------------------------------------------


def starting_adapter_folder(config, processes: int = 1) -> Path | None:
    """The PEFT folder GRPO starts from (None: a fresh LoRA), as ``adapter.init`` says."""
    init = config.adapter.init
    if init == "fresh":
        return None
    if init == "sft":
        if processes > 1:
            # Every process would train the missing warm start at once: it must be cached first.
            from essa.sft.cache import is_complete, warm_start_dir
            folder = warm_start_dir(config)
            if not is_complete(folder):
                raise FileNotFoundError(
                    f"adapter.init: sft, and the warm start is not cached ({folder}); with {processes} "
                    "processes train it first: essa-sft --cache --config ... (essa-grpo.sbatch does)")
            return Path(folder)
        return Path(ensure_warm_start(config))
    folder = Path(init).expanduser()
    if not (folder / "adapter_config.json").is_file():
        raise FileNotFoundError(f"adapter.init: {folder} is not a PEFT adapter folder (no "
                                f"adapter_config.json); use 'sft', 'fresh' or an adapter folder")
    return folder


def load_policy(config, model_path: Path, setup: GRPOSetup | None = None):
    """(trainable peft model, description of where its adapter came from): the base in the
    set-up's dtype on its device (float32 on the CPU without a set-up), the LoRA factors in float32
    (peft's ``autocast_adapter_dtype``)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    dtype, device = (setup.torch_dtype, setup.device) if setup else (torch.float32, "cpu")
    folder = starting_adapter_folder(config, setup.processes if setup else 1)
    base = AutoModelForCausalLM.from_pretrained(str(model_path), dtype=dtype)
    if device != "cpu":
        base = base.to(device)
    if folder is not None:
        return PeftModel.from_pretrained(base, str(folder), is_trainable=True), str(folder)
    return add_fresh_lora(base, config.adapter, config.seed), "fresh"  # as the SFT warm start starts


def essa_reward_func(reward, counter: TokenCount, name: str):
    """ESSA's reward as a TRL reward function: ``completions`` and the ``answer`` and ``question``
    columns in, floats out.

    It also counts the sampled completion tokens (``completion_ids``, end-of-turn token included,
    as the engines count them); each process counts its own share of the batch.
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
    ``grpo.eval_every`` steps and at the last one, and writes the metrics records.

    Under ``accelerate launch`` every process runs the callback, but only the main one validates and
    writes; :meth:`attach` gives it the trainer's accelerator, through which the main process's
    stop decision and every process's token count are summed each step (the others' clocks include
    the main process's validation, so they must not decide for themselves).
    """

    def __init__(self, config, model, scorer: GreedyScorer, metrics, tokens: TokenCount):
        self.config, self.settings = config, config.grpo
        self.model, self.scorer, self.metrics, self.tokens = model, scorer, metrics, tokens
        self.t_start: float | None = None
        self.eval_seconds = 0.0
        self.final_seconds: float | None = None
        self.logged_tokens = 0
        self.stop_reason = "steps"
        self.last_reward: float | None = None
        self.is_main = True
        self.accelerator = None  # set by attach() when there are several processes
        self.synced_tokens = 0  # tokens.total after the last sum over processes

    def attach(self, accelerator) -> None:
        """Several processes: decide and count with the others (see the class docstring)."""
        self.is_main = accelerator.is_main_process
        self.accelerator = accelerator if accelerator.num_processes > 1 else None

    def training_seconds(self) -> float:
        """Seconds since training began, less the time spent evaluating."""
        if self.t_start is None:
            return 0.0
        return time.time() - self.t_start - self.eval_seconds

    def validate(self, generation: int) -> float | None:
        """Validation accuracy now; generation -1 is the starting point (the records essa-train writes)."""
        split = self.config.task.validation_split
        if not split or not self.is_main:
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

    def _sum_over_processes(self, stop: bool) -> bool:
        """All processes: the sampled tokens of all of them, and whether the main one stops."""
        local = self.tokens.total - self.synced_tokens
        summed = self.accelerator.reduce(
            torch.tensor([local, int(stop)], dtype=torch.long, device=self.accelerator.device),
            reduction="sum").tolist()
        self.tokens.total = self.synced_tokens = self.synced_tokens + int(summed[0])
        return summed[1] > 0

    def on_train_begin(self, args, state, control, **kwargs):
        self.t_start = time.time()

    def on_step_end(self, args, state, control, **kwargs):
        step, budget = state.global_step, self.settings.max_wall_time_s
        stop = bool(self.is_main and budget and self.training_seconds() >= budget)
        if self.accelerator is not None:
            stop = self._sum_over_processes(stop)
        if stop:
            control.should_training_stop = True
            self.stop_reason = "max_wall_time_s"
        last = control.should_training_stop or step >= state.max_steps
        if last or (self.settings.eval_every and step % self.settings.eval_every == 0):
            self.validate(step)
        if last and self.final_seconds is None:
            self.final_seconds = self.training_seconds()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or "reward" not in logs or not self.is_main:  # the end-of-training log has no reward
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


def grpo_argument_values(config, run_dir: Path, progress: bool, setup: GRPOSetup | None = None) -> dict:
    """The keyword arguments of TRL's GRPOConfig: one AdamW step per sampled batch, no saving, and
    the device, precision, generation and checkpointing of ``setup`` (the CPU one without it)."""
    setup = setup or GRPOSetup("cpu", "float32", False, "transformers", False)
    g = config.grpo
    values = dict(
        output_dir=str(run_dir / "trainer"),
        max_steps=g.steps,
        # TRL counts completions per device batch: a step's prompts_per_step groups of
        # num_generations, split over the processes (decide_grpo_setup checked that they divide).
        per_device_train_batch_size=g.prompts_per_step * g.num_generations // setup.processes,
        gradient_accumulation_steps=1,
        num_generations=g.num_generations,
        max_completion_length=g.max_completion_length or config.engine.max_tokens,
        temperature=g.temperature,
        learning_rate=g.learning_rate,
        lr_scheduler_type=g.lr_scheduler,
        warmup_steps=0,
        beta=g.beta,
        use_vllm=setup.generation == "vllm",
        use_cpu=setup.use_cpu,
        bf16=setup.bf16,
        fp16=False,
        # a small model on the CPU: recomputing costs more than it saves (auto is off there)
        gradient_checkpointing=setup.gradient_checkpointing,
        logging_steps=g.log_every,
        save_strategy="no",
        report_to="none",
        disable_tqdm=not progress,
        dataloader_pin_memory=False,
        seed=config.seed,
    )
    if setup.generation == "vllm":
        values.update(vllm_mode="colocate", vllm_gpu_memory_utilization=setup.vllm_gpu_memory_utilization)
    if setup.gradient_checkpointing:
        values["gradient_checkpointing_kwargs"] = {"use_reentrant": False}
    return values


def grpo_arguments(config, run_dir: Path, progress: bool, setup: GRPOSetup | None = None):
    """TRL's GRPOConfig from :func:`grpo_argument_values`."""
    from trl import GRPOConfig

    return GRPOConfig(**grpo_argument_values(config, run_dir, progress, setup))


def run_grpo(config, run_dir: str | Path, progress: bool = False, setup: GRPOSetup | None = None) -> dict:
    """Train with GRPO into ``run_dir`` (config.yaml already there); return the summary it writes
    (the main process's; the others return it without writing anything)."""
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import GRPOTrainer

    run_dir = Path(run_dir)
    cfg, g = config, config.grpo
    setup = setup or probe_grpo_setup(cfg)
    if g.threads:
        torch.set_num_threads(g.threads)
    if not setup.use_cpu:
        torch.cuda.set_device(setup.device)  # the trainer puts the model on the current GPU
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

    model, start = load_policy(cfg, model_path, setup)
    metrics = MetricsWriter(run_dir / "metrics.jsonl")
    scorer = GreedyScorer(cfg, task, tokenizer, reward)
    recorder = RunRecorder(cfg, model, scorer, metrics, tokens)
    trainer = GRPOTrainer(model=model, reward_funcs=[essa_reward_func(reward, tokens, f"essa_{task.reward}")],
                          args=grpo_arguments(cfg, run_dir, progress, setup), train_dataset=dataset,
                          processing_class=tokenizer, callbacks=[recorder])
    from transformers.trainer_callback import PrinterCallback
    trainer.remove_callback(PrinterCallback)  # it prints every log dict; run.log has our lines
    recorder.attach(trainer.accelerator)
    main = trainer.accelerator.is_main_process  # only it writes files and scores validation / test
    log.info("GRPO set-up: %s", setup.describe())
    log.info("GRPO: %s from %s; %d steps of %d prompts x %d completions (<= %d tokens), lr %g, beta %g, "
             "budget %s; reward %s; %d training prompts", model_path.name, start, g.steps,
             g.prompts_per_step, g.num_generations, trainer.args.max_completion_length,
             g.learning_rate, g.beta, f"{g.max_wall_time_s:g} s" if g.max_wall_time_s else "none",
             task.reward, len(train))

    test_start = _test_accuracy(cfg, task, scorer, model) if main else None  # before any training
    recorder.validate(-1)
    trainer.train()
    final_dir = run_dir / "adapter_final"
    wall = recorder.final_seconds if recorder.final_seconds is not None else recorder.training_seconds()
    summary = {"method": "grpo", "steps": trainer.state.global_step, "tokens": tokens.total,
               "wall_time": round(wall, 3), "stopped_by": recorder.stop_reason,
               "start_adapter": start, "last_train_reward": recorder.last_reward,
               "adapters": {"final": str(final_dir)}, "test": {}}
    if not main:
        return summary
    try:
        (run_dir / "trainer").rmdir()  # TRL's output_dir: empty, nothing is saved there
    except OSError:
        pass

    # Only the trained adapter: with beta > 0 TRL keeps a frozen copy named "ref" beside it.
    model.save_pretrained(str(final_dir), selected_adapters=["default"])
    if test_start is not None:
        test_final = _test_accuracy(cfg, task, scorer, model)
        summary["test"] = {"items": test_start[1],
                           "accuracy": {"start": test_start[0], "final": test_final[0]}}
        metrics.write({"generation": trainer.state.global_step, "phase": "test",
                       "test_items": test_start[1], "test_accuracy_start": test_start[0],
                       "test_accuracy_final": test_final[0]})
    atomic_write(run_dir / "summary.json", json.dumps(summary, indent=1))
    log.info("summary: %d steps (stopped by %s), %d tokens, %.1f s of training; test accuracy %s; "
             "adapter in %s", summary["steps"], recorder.stop_reason, tokens.total, wall,
             ", ".join(f"{k} {v:.3f}" for k, v in summary["test"].get("accuracy", {}).items())
             or "skipped", final_dir)
    return summary


def _test_accuracy(config, task, scorer: GreedyScorer, model) -> tuple[float, int] | None:
    """(accuracy, items) on the first runtime.test_items test items; None when there are none."""
    split, n = config.task.test_split, config.runtime.test_items
    if not n or not split or not task.splits.get(split):
        return None
    return scorer.accuracy(model, split, n)
