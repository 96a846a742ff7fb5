"""The run config: one typed dataclass tree, a docstring (``help``) on every field.

Read it with :func:`essa.config.load_config`; every field can be overridden on the command line with
``--set section.field=value``. Rules that span several fields live in ``validate`` methods, called
once after loading (see :mod:`essa.config.loader`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from population.factory import STRATEGY_NAMES


def _f(default, help: str, **kw):
    """A dataclass field with its help text (shown by ``--print-config --help-fields`` and docs)."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help}, **kw)
    return field(default=default, metadata={"help": help}, **kw)


class ConfigError(ValueError):
    """A config problem a user can fix: the message names the field and what is allowed."""


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


def _check_device(value: str, name: str) -> None:
    """A torch device field: auto, cpu, cuda or cuda:N."""
    _check(value in ("auto", "cpu", "cuda") or value.startswith("cuda:"),
           f"{name}: {value!r} not allowed; choose auto, cpu, cuda or cuda:N")


@dataclass
class ModelConfig:
    """The base model every engine loads once."""

    path: str = _f("smollm2-135m-instruct", "Base model: a local Hugging Face folder, or the alias "
                   "'smollm2-135m-instruct' for the CPU demo model prepared by `essa prepare-model`.")
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = _f(
        "auto", "Weight and compute dtype of the base model. auto: bfloat16 where the device computes "
        "it natively (CUDA with bf16; CPUs with AVX512_BF16 or AMX), float32 on other CPUs (bf16 is "
        "emulated there, many times slower). Each worker decides on its own device; see "
        "essa/models/dtype.py.")
    quantization: Literal["none", "int8", "int4", "fp8"] = _f(
        "none", "Quantized base model; candidates stay full-precision LoRA on top. vLLM engine: "
        "int8 (W8A8) and int4 (W4A16) serve the compressed-tensors copy made by `essa quantize` "
        "(docs/quantization.md), on the CPU build and CUDA alike; fp8 is vLLM's own at load time "
        "(CUDA). Transformers engine: bitsandbytes int8 / nf4 at load time. A quantized base runs "
        "candidates as adapters (engine.mode merged is refused: there are no dense weights to "
        "merge into).")
    quantized_path: str = _f(
        "", "vLLM with quantization int8/int4: the compressed-tensors checkpoint to serve (e.g. a "
        "published W8A8/W4A16 copy of model.path). Empty: the copy `essa quantize` wrote for "
        "model.path in $ESSA_CACHE/quantized.")
    chat_template: bool = _f(True, "Wrap prompts with the tokenizer's chat template.")

    def validate(self) -> None:
        _check(bool(self.path), "model.path: must be a model folder or a known alias, got ''")
        _check(not self.quantized_path or self.quantization in ("int8", "int4"),
               f"model.quantized_path: used only with model.quantization int8 or int4, got "
               f"quantization {self.quantization!r}")


@dataclass
class ArithmeticConfig:
    """Difficulty knobs of the synthetic arithmetic word-problem demo task."""

    seed: int = _f(1234, "Seed of the problem generator, apart from the run seed so that runs with "
                   "different seeds share the same splits.")
    min_operand: int = _f(2, "Smallest operand.")
    max_operand: int = _f(30, "Largest operand of additions and subtractions.")
    max_factor: int = _f(12, "Largest operand of a multiplication.")
    operations: list[str] = _f(["add", "sub", "mul"], "Operations used: any of add, sub, mul.")
    min_steps: int = _f(1, "Fewest operations in one problem.")
    max_steps: int = _f(2, "Most operations in one problem (a problem with 2 steps chains two "
                        "operations on three numbers).")
    train_size: int = _f(5000, "Problems in the train split.")
    validation_size: int = _f(300, "Problems in the validation split.")
    test_size: int = _f(300, "Problems in the test split.")

    def validate(self) -> None:
        allowed = {"add", "sub", "mul"}
        bad = [op for op in self.operations if op not in allowed]
        _check(not bad and bool(self.operations),
               f"task.arithmetic.operations: {bad or 'empty'} not allowed; choose from {sorted(allowed)}")
        _check(0 <= self.min_operand < self.max_operand,
               "task.arithmetic: need 0 <= min_operand < max_operand")
        _check(self.max_factor >= 2, "task.arithmetic.max_factor: must be >= 2")
        _check(1 <= self.min_steps <= self.max_steps <= 4,
               "task.arithmetic: need 1 <= min_steps <= max_steps <= 4")
        for name in ("train_size", "validation_size", "test_size"):
            _check(getattr(self, name) >= 1, f"task.arithmetic.{name}: must be >= 1")


@dataclass
class TaskConfig:
    """What to train on: the dataset, its fields, the prompt and the verifiable reward."""

    dataset: str = _f("arithmetic", "A known dataset (arithmetic, gsm8k, math500, aime24, amc23, "
                      "minerva_math, olympiadbench), a local .jsonl/.json/.parquet file or folder, "
                      "or a Hugging Face dataset id (read from the local HF cache only).")
    data_dir: str = _f("", "Folder of the known benchmark files; empty means $ESSA_DATA_DIR or "
                       "../shared/data beside the project.")
    train_split: str = _f("train", "Split used for fitness mini-batches and SFT.")
    validation_split: str = _f("validation", "Split used to track progress during a run. A dataset "
                               "without one gets it carved off its train split (validation_size rows); "
                               "empty: none.")
    test_split: str = _f("test", "Held-out split for the final report. Never used for tuning.")
    validation_size: int = _f(300, "Rows carved off the train split when there is no validation split.")
    question_field: str = _f("", "Field holding the question; empty means the known dataset's default "
                             "(or 'question' / 'problem' for a file).")
    answer_field: str = _f("", "Field holding the gold answer (or a GSM8K-style solution ending "
                           "'#### n'); empty means the known dataset's default.")
    instruction: str = _f("", "Instruction appended to each question; empty means the task's default "
                          "(e.g. 'end with #### n' or 'put the final answer in \\boxed{}').")
    reward: str = _f("", "Reward name (arithmetic, gsm8k, ifeval, math) or 'module:function'; empty "
                     "means the dataset's default.")
    reward_options: dict[str, Any] = _f({}, "Options of the reward, used in the search and in every "
                                        "evaluation (docs/rewards.md), e.g. {level: instruction} "
                                        "for ifeval or {mode: flexible} for gsm8k.")
    arithmetic: ArithmeticConfig = field(default_factory=ArithmeticConfig,
                                         metadata={"help": "Knobs of the synthetic demo task."})

    def validate(self) -> None:
        _check(self.validation_size >= 1, "task.validation_size: must be >= 1")
        if self.reward_options:
            from essa.data.loading import KNOWN_DATASETS
            from essa.rewards.registry import check_reward_options
            known = KNOWN_DATASETS.get(self.dataset)
            default = "arithmetic" if self.dataset == "arithmetic" else known.reward if known else ""
            try:
                check_reward_options(self.reward or default, self.reward_options)
            except ValueError as error:
                raise ConfigError(f"task.reward_options: {error}") from None
        self.arithmetic.validate()


@dataclass
class AdapterConfig:
    """The LoRA adapter whose singular values ESSA searches, and where it comes from."""

    init: str = _f("sft", "Where the starting adapter comes from: 'sft' (train the warm start with "
                   "the sft section, cached in the run's parent folder), 'fresh' (a random adapter, "
                   "the paper's no-warm-start ablation) or the path of a PEFT LoRA adapter folder.")
    rank: int = _f(8, "LoRA rank r of a trained or fresh adapter.")
    alpha: float = _f(16.0, "LoRA alpha (the update is scaled by alpha / r).")
    target_modules: list[str] = _f(["q_proj", "k_proj", "v_proj", "o_proj"],
                                   "Modules that get LoRA factors (attention projections by default).")
    alpha_frac: float = _f(1.0, "Share of each factor's singular values that is searched: the top "
                           "floor(alpha_frac * r); the rest keep their starting values.")

    def validate(self) -> None:
        _check(self.rank >= 1, f"adapter.rank: must be >= 1, got {self.rank}")
        _check(self.alpha > 0, f"adapter.alpha: must be > 0, got {self.alpha}")
        _check(bool(self.target_modules), "adapter.target_modules: must not be empty")
        _check(0 < self.alpha_frac <= 1, f"adapter.alpha_frac: must be in (0, 1], got {self.alpha_frac}")
        _check(int(self.alpha_frac * self.rank + 1e-9) >= 1,
               f"adapter.alpha_frac: floor({self.alpha_frac} * rank {self.rank}) = 0 values would be "
               f"searched; use alpha_frac >= {1 / self.rank:.3g}")


@dataclass
class SFTConfig:
    """The LoRA SFT warm start (essa-sft): loss on the answer tokens only."""

    steps: int = _f(60, "Optimizer steps.")
    batch_size: int = _f(8, "Examples per step.")
    learning_rate: float = _f(1e-3, "AdamW learning rate (constant after warm-up).")
    warmup_steps: int = _f(5, "Linear warm-up steps.")
    weight_decay: float = _f(0.0, "AdamW weight decay.")
    max_examples: int = _f(2000, "Use at most this many training examples.")
    max_length: int = _f(384, "Truncate prompt + answer to this many tokens.")
    threads: int = _f(0, "torch CPU threads; 0: every core the process may use (under mpirun "
                      "oneMKL would otherwise leave it one).")
    eval_examples: int = _f(200, "Validation examples scored after training (0: skip).")
    dataset: str = _f("", "Dataset the warm start is trained on (any task.dataset value, read with "
                      "the default fields); empty: the search task's.")
    source: Literal["reference", "self"] = _f(
        "reference", "What the warm start imitates: 'reference' (the dataset's solutions) or 'self' "
        "(the base model's own sampled answers that the task's reward scores 1.0, for tasks "
        "without references such as ifeval; docs/sft.md).")
    self_prompts: int = _f(256, "source self: training prompts the base model answers.")
    self_samples: int = _f(4, "source self: answers sampled per prompt.")
    self_temperature: float = _f(0.8, "source self: sampling temperature of those answers.")
    trainer: Literal["auto", "loop", "trl"] = _f(
        "auto", "auto: 'trl' on CUDA, 'loop' on the CPU. loop: the plain float32 torch loop (the CPU "
        "demo's). trl: TRL's SFTTrainer with peft (bf16 autocast, gradient checkpointing, QLoRA); "
        "docs/sft.md.")
    device: str = _f("auto", "auto (cuda when this process sees a GPU, else cpu), cpu, cuda or cuda:N.")
    precision: Literal["auto", "float32", "bf16"] = _f(
        "auto", "trl trainer: auto is bf16 autocast (base in bf16, LoRA factors and optimizer in "
        "float32) where the device computes bf16 natively, float32 elsewhere. The loop trainer is "
        "float32.")
    quantization: Literal["none", "nf4"] = _f(
        "none", "nf4: QLoRA, a 4-bit bitsandbytes base with LoRA factors in float32/bf16 (trl "
        "trainer; a 32B warm start on one 80 GB GPU).")
    gradient_checkpointing: bool | Literal["auto"] = _f(
        "auto", "Recompute activations in the backward pass (less memory, about 30% more time); auto: "
        "true on CUDA, false on the CPU (trl trainer).")
    max_batch_tokens: int = _f(0, "trl trainer: the most padded tokens in one forward pass; a step's "
                               "sft.batch_size examples are split into equal micro-batches under it, "
                               "gradients accumulated (same steps, same loss). 0: the whole batch at once.")
    device_memory_gib: float = _f(0.0, "Memory of the training device the --dry-run estimate is "
                                  "checked against; 0: the visible GPU's (no check without one).")

    def validate(self) -> None:
        for name in ("steps", "batch_size", "max_examples", "max_length", "self_prompts", "self_samples"):
            _check(getattr(self, name) >= 1, f"sft.{name}: must be >= 1, got {getattr(self, name)}")
        _check(self.self_temperature > 0, f"sft.self_temperature: must be > 0, got {self.self_temperature}")
        _check(self.learning_rate > 0, f"sft.learning_rate: must be > 0, got {self.learning_rate}")
        _check(self.warmup_steps >= 0 and self.eval_examples >= 0 and self.threads >= 0,
               "sft.warmup_steps, sft.eval_examples, sft.threads: must be >= 0")
        _check(self.max_batch_tokens >= 0 and self.device_memory_gib >= 0,
               "sft.max_batch_tokens, sft.device_memory_gib: must be >= 0")
        _check_device(self.device, "sft.device")
        _check(not (self.trainer == "loop" and self.quantization != "none"),
               "sft.quantization: nf4 (QLoRA) needs sft.trainer trl or auto; the loop trainer is float32")
        _check(not (self.trainer == "loop" and self.precision == "bf16"),
               "sft.precision: bf16 needs sft.trainer trl or auto; the loop trainer is float32")


@dataclass
class RewardModelConfig:
    """The reward model of fitness.kind reward_model (essa/reward_model/): a local Hugging Face
    sequence-classification model that scores each (question, completion) pair."""

    path: str = _f("", "Local Hugging Face folder of an AutoModelForSequenceClassification reward "
                   "model (an architecture *ForSequenceClassification with a score head, e.g. "
                   "Skywork-Reward-Llama-3.1-8B); nothing is downloaded.")
    output: int | str = _f(0, "Which output is the reward: an index into the model's logits, or a "
                           "label name from its config.json id2label.")
    dtype: Literal["auto", "float32", "bfloat16", "int8"] = _f(
        "auto", "auto: bfloat16 where the device computes it natively, else float32 (as "
        "model.dtype). int8: bitsandbytes 8-bit linear layers, CUDA only (on the CPU torch's dynamic "
        "int8 changes the scores too much: refused, see docs/fitness.md).")
    batch_size: int = _f(8, "(question, completion) pairs per forward pass.")
    max_length: int = _f(2048, "Most tokens of one pair; a longer pair loses the start of its "
                         "prompt (the end, where the score is read, is kept).")
    device: str = _f("auto", "auto (cuda when the worker sees a GPU, else cpu), cpu, cuda or cuda:N.")
    baseline: bool = _f(False, "Subtract the base model's reward on the same prompt (its greedy "
                        "completion, scored once per prompt and worker when decoding is greedy), "
                        "so fitness values compare across mini-batches of easier or harder prompts.")

    def validate(self) -> None:
        for name in ("batch_size", "max_length"):
            _check(getattr(self, name) >= 1,
                   f"fitness.reward_model.{name}: must be >= 1, got {getattr(self, name)}")
        _check_device(self.device, "fitness.reward_model.device")
        _check(not (self.dtype == "int8" and self.device == "cpu"),
               "fitness.reward_model.dtype int8 runs on CUDA only (bitsandbytes); on the CPU use "
               "bfloat16 or float32 (docs/fitness.md)")


@dataclass
class FitnessConfig:
    """What a candidate is scored on (essa.fitness): the paper's accuracy, a denser signal, or a
    reward model."""

    kind: Literal["accuracy", "loglik", "hybrid", "reward_model"] = _f(
        "accuracy", "accuracy: mean verifiable reward of greedy generations (the paper's). loglik: "
        "mean per-token log-likelihood of the reference solution, no generation (dense; needs "
        "solutions in the data). hybrid: accuracy + hybrid_weight * loglik. reward_model: mean "
        "score of a reward model (fitness.reward_model) on the generations; no answers needed.")
    prompts_per_candidate: int = _f(32, "Mini-batch size: prompts every candidate of a generation is "
                                    "scored on (the same prompts for all candidates).")
    hybrid_weight: float = _f(0.1, "Weight of the per-token log-likelihood in the hybrid fitness.")
    prompt_sampling: Literal["uniform", "informative"] = _f(
        "informative", "How each generation's mini-batch is drawn from the train split. uniform: a "
        "fresh seeded permutation, epoch after epoch (the paper's). informative: a share fresh_share "
        "drawn that way, the rest from prompts whose last mean reward over a generation's candidates "
        "was neither the lowest nor the highest possible (some candidates right, some wrong), "
        "which carry ranking information (essa/data/informative.py).")
    fresh_share: float = _f(0.5, "prompt_sampling informative: share of each mini-batch drawn fresh, "
                            "so the solve-rate estimates keep meeting new prompts.")
    reward_model: RewardModelConfig = field(default_factory=RewardModelConfig,
                                            metadata={"help": "The reward model of kind reward_model."})

    def validate(self) -> None:
        _check(self.prompts_per_candidate >= 1, "fitness.prompts_per_candidate: must be >= 1")
        _check(self.hybrid_weight >= 0, "fitness.hybrid_weight: must be >= 0")
        _check(0 < self.fresh_share <= 1, f"fitness.fresh_share: must be in (0, 1], got {self.fresh_share}")
        _check(self.kind != "reward_model" or bool(self.reward_model.path),
               "fitness.reward_model.path: must be set (a local reward model folder) with "
               "fitness.kind reward_model")
        self.reward_model.validate()


@dataclass
class EngineConfig:
    """The inference engine each worker owns."""

    backend: Literal["vllm", "transformers"] = _f("vllm", "vLLM (CPU or CUDA build) or the "
                                                  "transformers + peft fallback.")
    max_tokens: int = _f(64, "Most new tokens per completion.")
    temperature: float = _f(0.0, "Sampling temperature; 0 is greedy (the paper's fitness).")
    top_p: float = _f(1.0, "Nucleus sampling threshold (used when temperature > 0).")
    max_model_len: int = _f(1024, "Longest prompt plus completion, in tokens.")
    memory_fraction: float = _f(0.3, "vLLM gpu_memory_utilization: the share of GPU memory, or on the "
                                "CPU build the share of RAM, reserved for weights and KV cache.")
    kv_cache_gib: int = _f(0, "vLLM CPU build: KV cache size in whole GiB (VLLM_CPU_KVCACHE_SPACE); "
                             "0 sizes it from memory_fraction. Set it to run several engines in one "
                             "process or machine.")
    tensor_parallel_size: int = _f(1, "GPUs per engine (for 70B-class models).")
    seed: int = _f(0, "Engine sampling seed.")
    mode: Literal["auto", "adapter", "merged", "hybrid"] = _f(
        "auto", "How a candidate is applied (vLLM): 'adapter' (LoRA kernels, several candidates per "
        "pass, needed for quantized models), 'merged' (delta added into the base weights and "
        "restored exactly, one candidate per pass), 'hybrid' (merged for a pass of one candidate, "
        "adapter for several), 'auto' (CPU build with dense weights: hybrid when enforce_eager, "
        "else merged; otherwise adapter).")
    stop_at_answer: bool = _f(
        True, "Stop a completion as soon as its reward is decided: after the line of its first "
        "'#### n' (arithmetic, gsm8k) or after its first complete \\boxed{...} (math). Saves the "
        "tokens a model spends after its answer; other rewards are unaffected (essa/engines/stop_rules.py).")
    max_loras: int = _f(8, "Adapter mode: most candidates (LoRA adapters) in one engine pass.")
    adapter_dir: str = _f("", "Adapter mode: folder for candidate adapters (default /dev/shm).")
    enforce_eager: bool | Literal["auto"] = _f(
        "auto", "vLLM: skip torch.compile / graph capture (true), or compile (false). Compiling takes "
        "minutes on the CPU build with empty caches and then generates faster. auto: compile on "
        "GPUs; on the CPU build compile only when the planned generation is long enough to win "
        "the compile time back (essa/engines/compile_choice.py).")

    def validate(self) -> None:
        _check(self.max_tokens >= 1, f"engine.max_tokens: must be >= 1, got {self.max_tokens}")
        _check(self.temperature >= 0, f"engine.temperature: must be >= 0, got {self.temperature}")
        _check(0 < self.top_p <= 1, f"engine.top_p: must be in (0, 1], got {self.top_p}")
        _check(self.max_model_len > self.max_tokens,
               "engine.max_model_len: must be larger than engine.max_tokens")
        _check(0 < self.memory_fraction <= 1,
               f"engine.memory_fraction: must be in (0, 1], got {self.memory_fraction}")
        _check(self.tensor_parallel_size >= 1, "engine.tensor_parallel_size: must be >= 1")
        _check(self.kv_cache_gib >= 0, f"engine.kv_cache_gib: must be >= 0, got {self.kv_cache_gib}")
        _check(self.max_loras >= 1, f"engine.max_loras: must be >= 1, got {self.max_loras}")


@dataclass
class SearchConfig:
    """The evolution strategy over the adapter's singular values (essa-train)."""

    strategy: str = _f("auto", "population strategy: cmaes (pycma, full covariance: the paper's), "
                       "sep-cmaes, cmaes-numpy (own full CMA-ES for large d: lazy Cholesky instead of "
                       "eigh, batched covariance updates), sep-cmaes-numpy, openai-es, or auto "
                       "(cmaes up to d = 2048, cmaes-numpy up to 8192, sep-cmaes-numpy above).")
    parametrization: Literal["relative", "absolute"] = _f(
        "relative", "relative: the vector z gives s = s0 * (1 + z), started at z = 0 (steps are "
        "shares of each starting value). absolute: the vector is s itself, started at s0.")
    sigma0: float = _f(0.3, "Initial step size (in units of z for relative, of s for absolute).")
    popsize: int = _f(12, "Candidates per generation (lambda).")
    generations: int = _f(10, "Generations to run (a resumed run continues up to this number).")
    preset: Literal["essa", "paper"] = _f(
        "essa", "essa: this project's defaults. paper: the paper's method, for comparable results: "
        "no mirrored sampling, mean_lr 1, uniform mini-batches, completions to engine.max_tokens "
        "(no stop_at_answer), the last mean returned (runtime.select_adapter false). A field set explicitly in the config or with --set wins over the preset.")
    mirrored: bool = _f(True, "Mirrored (antithetic) sampling: candidates come in pairs m + sigma*y "
                        "and m - sigma*y, scored on the same prompts, so a pair's difference "
                        "cancels the mini-batch's common difficulty. Needs an even popsize.")
    mean_lr: float = _f(0.5, "Learning rate of the mean (CMA-ES's c_m): the mean moves this share of "
                        "the way to the weighted recombination of the selected candidates. Below 1 "
                        "it averages the noisy steps of several generations (0.5 measured best at "
                        "the demo's budget: benchmarks/RESULTS.md, noisy search benchmark; 1 is the "
                        "paper's).")
    evaluations_per_generation: int = _f(
        0, "A fixed budget of candidate-prompt evaluations per generation; when > 0 it sets "
        "search.popsize and fitness.prompts_per_candidate (do not set those too) by the split that "
        "population/budget.py measured best (benchmarks/RESULTS.md). 0: use the two fields.")

    def validate(self) -> None:
        _check(self.strategy in STRATEGY_NAMES,
               f"search.strategy: {self.strategy!r} not allowed; choose from {list(STRATEGY_NAMES)}")
        _check(self.sigma0 > 0, f"search.sigma0: must be > 0, got {self.sigma0}")
        _check(self.popsize >= 2, f"search.popsize: must be >= 2, got {self.popsize}")
        _check(self.generations >= 1, f"search.generations: must be >= 1, got {self.generations}")
        _check(0 < self.mean_lr <= 1, f"search.mean_lr: must be in (0, 1], got {self.mean_lr}")
        _check(not self.mirrored or self.popsize % 2 == 0,
               f"search.mirrored: needs an even search.popsize, got {self.popsize} "
               f"(or set search.mirrored=false)")
        _check(self.evaluations_per_generation >= 0,
               f"search.evaluations_per_generation: must be >= 0, got {self.evaluations_per_generation}")


@dataclass
class RuntimeConfig:
    """The MPI runtime of essa-train: evaluation cadence, time limits, monitoring."""

    eval_every: int = _f(5, "Evaluate the mean vector on the validation split every N generations "
                         "(0: never during the run).")
    eval_items: int = _f(100, "Validation items of those evaluations (the first N of the split).")
    test_items: int = _f(100, "Test items of the final base / start / mean evaluation (0: skip).")
    select_adapter: bool = _f(
        True, "Return the mean with the best validation score among the validated generations "
        "(adapter_selected: the report's gain line, essa compare and essa-eval RUN_DIR use it). "
        "false: return the last mean, as the paper does (search.preset paper).")
    patience: int = _f(0, "Stop the search early when the validation score of the mean has not "
                       "improved for this many validations in a row (0: never).")
    min_task_items: int = _f(
        16, "End of a generation: a task holds at most the waiting items / workers, but at least "
        "this many, so the last candidates are cut into slices of their prompts that idle workers "
        "share (guided self-scheduling; while many candidates wait, tasks are whole candidates). "
        "Scores are kept per prompt, so a candidate's fitness does not depend on the cuts. "
        "0: always whole candidates.")
    master_evaluates: bool = _f(
        False, "Under mpirun, rank 0 also runs an engine and scores tasks like a worker (the master "
        "runs in a thread beside it), so the GPU of rank 0 does not idle.")
    task_timeout_s: float = _f(1800.0, "Stop the job when one candidate takes longer than this "
                               "(a hung or dead worker); the message names the rank and candidate.")
    cpu_bind: Literal["split", "nobind", "auto"] = _f(
        "split", "vLLM CPU build: OpenMP binding of each worker's engine (VLLM_CPU_OMP_THREADS_BIND): "
        "split gives every worker on a host its own cores (nobind when there are fewer cores than "
        "workers), nobind and auto are passed through. A value already in the environment wins.")
    evaluator: Literal["engine", "fake"] = _f(
        "engine", "engine: score candidates with the inference engine. fake: a deterministic "
        "stand-in without a model, for tests and benchmarks of the runtime itself.")
    fake_delay_s: float = _f(0.0, "evaluator=fake: seconds every candidate evaluation sleeps.")
    report_to: list[str] = _f([], "Extra metric sinks besides metrics.jsonl: tensorboard, wandb "
                              "(imported only when listed).")

    def validate(self) -> None:
        _check(self.eval_every >= 0, f"runtime.eval_every: must be >= 0, got {self.eval_every}")
        _check(self.eval_items >= 1, f"runtime.eval_items: must be >= 1, got {self.eval_items}")
        _check(self.test_items >= 0, f"runtime.test_items: must be >= 0, got {self.test_items}")
        _check(self.patience >= 0, f"runtime.patience: must be >= 0, got {self.patience}")
        _check(self.task_timeout_s > 0, "runtime.task_timeout_s: must be > 0")
        _check(self.min_task_items >= 0, f"runtime.min_task_items: must be >= 0, got {self.min_task_items}")
        _check(self.fake_delay_s >= 0, "runtime.fake_delay_s: must be >= 0")
        bad = [r for r in self.report_to if r not in ("tensorboard", "wandb")]
        _check(not bad, f"runtime.report_to: {bad} not allowed; choose from ['tensorboard', 'wandb']")


@dataclass
class GRPOSettings:
    """The GRPO baseline (essa-grpo): TRL's GRPOTrainer on the same model, adapter, data and reward."""

    steps: int = _f(100, "Optimizer steps; each samples a fresh group of completions per prompt.")
    prompts_per_step: int = _f(4, "Prompts per step; the batch holds prompts_per_step * "
                               "num_generations completions.")
    num_generations: int = _f(8, "Completions sampled per prompt (the group whose mean reward is the "
                              "baseline of the advantage); at least 2.")
    learning_rate: float = _f(5e-5, "AdamW learning rate of the LoRA factors.")
    lr_scheduler: Literal["constant", "linear", "cosine"] = _f(
        "constant", "Learning-rate schedule over grpo.steps (constant suits a wall-time budget, which "
        "may stop the run before the schedule ends).")
    beta: float = _f(0.0, "KL coefficient against the starting adapter (TRL's default 0: no "
                     "reference model, faster).")
    max_completion_length: int = _f(0, "Most new tokens per sampled completion; 0 means "
                                    "engine.max_tokens, the length ESSA generates.")
    temperature: float = _f(1.0, "Sampling temperature of the training completions (must be > 0: "
                            "a group of identical greedy answers carries no signal).")
    max_wall_time_s: float = _f(0.0, "Stop training once this many seconds of training (validation "
                                "excluded, as in essa-train) have passed; 0: no limit.")
    eval_every: int = _f(5, "Greedy validation accuracy every N steps, on the first "
                         "runtime.eval_items items (0: only at the start and the end).")
    log_every: int = _f(1, "Write a phase=train record (reward, loss, kl, tokens) every N steps.")
    threads: int = _f(0, "torch CPU threads; 0 leaves torch's default (all cores).")
    device: str = _f("auto", "auto (cuda when visible, else cpu), cpu or cuda. On CUDA the policy "
                     "trains in bf16 autocast (LoRA factors in float32); on the CPU in float32.")
    generation: Literal["auto", "transformers", "vllm"] = _f(
        "auto", "How training completions are sampled: vllm (TRL's colocate mode: a vLLM engine "
        "on each training GPU) or transformers' generate. auto: vllm on CUDA when vllm imports, "
        "else transformers.")
    vllm_gpu_memory_utilization: float = _f(
        0.3, "generation vllm: the share of each GPU's memory the colocated vLLM engine takes; "
        "the rest is the trainer's.")
    gradient_checkpointing: bool | Literal["auto"] = _f(
        "auto", "Recompute activations in the backward pass; auto: true on CUDA, false on the CPU.")

    def validate(self) -> None:
        _check_device(self.device, "grpo.device")
        _check(0 < self.vllm_gpu_memory_utilization < 1,
               f"grpo.vllm_gpu_memory_utilization: must be in (0, 1), got {self.vllm_gpu_memory_utilization}")
        for name in ("steps", "prompts_per_step", "log_every"):
            _check(getattr(self, name) >= 1, f"grpo.{name}: must be >= 1, got {getattr(self, name)}")
        _check(self.num_generations >= 2,
               f"grpo.num_generations: must be >= 2 (GRPO compares completions within a group), "
               f"got {self.num_generations}")
        _check(self.learning_rate > 0, f"grpo.learning_rate: must be > 0, got {self.learning_rate}")
        _check(self.beta >= 0, f"grpo.beta: must be >= 0, got {self.beta}")
        _check(self.max_completion_length >= 0,
               f"grpo.max_completion_length: must be >= 0, got {self.max_completion_length}")
        _check(self.temperature > 0, f"grpo.temperature: must be > 0, got {self.temperature}")
        _check(self.max_wall_time_s >= 0, f"grpo.max_wall_time_s: must be >= 0, got {self.max_wall_time_s}")
        _check(self.eval_every >= 0 and self.threads >= 0, "grpo.eval_every, grpo.threads: must be >= 0")


@dataclass
class RunConfig:
    """One ESSA run: read from YAML, overridden with ``--set``, saved into the run directory."""

    name: str = _f("essa", "Run name; the run directory is <output_dir>/<name>.")
    output_dir: str = _f("runs", "Parent folder of run directories.")
    seed: int = _f(0, "Master seed: data sampling, search and task generation derive from it.")
    model: ModelConfig = field(default_factory=ModelConfig, metadata={"help": "Base model."})
    task: TaskConfig = field(default_factory=TaskConfig, metadata={"help": "Task and reward."})
    adapter: AdapterConfig = field(default_factory=AdapterConfig, metadata={"help": "The searched adapter."})
    sft: SFTConfig = field(default_factory=SFTConfig, metadata={"help": "SFT warm start."})
    fitness: FitnessConfig = field(default_factory=FitnessConfig, metadata={"help": "Candidate fitness."})
    engine: EngineConfig = field(default_factory=EngineConfig, metadata={"help": "Inference engine."})
    search: SearchConfig = field(default_factory=SearchConfig, metadata={"help": "Evolution strategy."})
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig, metadata={"help": "MPI runtime."})
    grpo: GRPOSettings = field(default_factory=GRPOSettings,
                               metadata={"help": "The GRPO baseline (essa-grpo)."})

    def validate(self) -> None:
        _check(bool(self.name) and "/" not in self.name,
               f"name: must be a non-empty folder name without '/', got {self.name!r}")
        self.model.validate()
        self.task.validate()
        self.adapter.validate()
        self.sft.validate()
        self.fitness.validate()
        self.engine.validate()
        self.search.validate()
        self.runtime.validate()
        self.grpo.validate()
        _check(self.grpo.max_completion_length < self.engine.max_model_len,
               "grpo.max_completion_length: must be smaller than engine.max_model_len")
