"""``essa-train --dry-run``: what a run would do, computed without loading any weights."""

from __future__ import annotations

import json
from pathlib import Path

import population
from essa.adapters.layout import searched_count
from essa.engines.compile_choice import choose_eager
from essa.models import resolve_model_path
from essa.models.dtype import probe_device, resolve_dtype
from essa.runtime.transport import world


def _adapter_shape(config) -> tuple[int, int, str]:
    """(LoRA modules, rank, where it comes from) from the adapter folder or the model config."""
    init = config.adapter.init
    if init in ("sft", "fresh"):
        model_cfg = json.loads((resolve_model_path(config.model.path) / "config.json").read_text())
        layers = int(model_cfg["num_hidden_layers"])
        return layers * len(config.adapter.target_modules), config.adapter.rank, \
            f"{init}: {layers} layers x {len(config.adapter.target_modules)} modules"
    folder = Path(init).expanduser()
    if not (folder / "adapter_config.json").is_file():
        raise FileNotFoundError(f"adapter.init: {folder} is not a PEFT adapter folder "
                                f"(no adapter_config.json)")
    from safetensors import safe_open
    rank = int(json.loads((folder / "adapter_config.json").read_text())["r"])
    with safe_open(str(folder / "adapter_model.safetensors"), "pt") as f:  # header only
        modules = sum(1 for k in f.keys() if ".lora_A." in k)
    return modules, rank, f"folder {folder}: {modules} LoRA modules"


def engine_count(config, ranks: int) -> int:
    """Engines of a run on ``ranks`` processes (rank 0 holds one only with master_evaluates)."""
    return ranks if ranks > 1 and config.runtime.master_evaluates else max(1, ranks - 1)


def planned_tokens_per_engine(config, ranks: int | None = None) -> int:
    """The most tokens one engine generates in the whole run (search, validations, final
    evaluation of base/start/mean/selected), shared evenly by the engines; ``ranks`` defaults to MPI's."""
    if ranks is None:
        ranks = world()[1]
    s, rt, f, e = config.search, config.runtime, config.fitness, config.engine
    search = s.generations * s.popsize * f.prompts_per_candidate * (0 if f.kind == "loglik" else 1)
    validations = (s.generations // rt.eval_every + 1) * rt.eval_items if rt.eval_every else 0
    # test: base, start, last mean, and the best-validated mean when validations choose one;
    # validation: what no in-run validation scored (the base; the last mean unless validated)
    rows = 4 if rt.eval_every and rt.select_adapter else 3
    val_rows = (1 + (s.generations % rt.eval_every != 0)) if rt.eval_every else 3
    final = rows * rt.test_items + val_rows * rt.eval_items
    return (search + validations + final) * e.max_tokens // engine_count(config, ranks)


def describe_plan(config, ranks: int) -> str:
    """A few lines: search dimension and layout, population, roles, batch, budget."""
    modules, rank, source = _adapter_shape(config)
    k = searched_count(rank, config.adapter.alpha_frac)
    dim = modules * 2 * k
    s, rt, f = config.search, config.runtime, config.fitness
    per_gen = s.popsize * f.prompts_per_candidate
    tokens = per_gen * (config.engine.max_tokens if f.kind != "loglik" else 0)
    roles = ("1 process: master + 1 worker (local transport)" if ranks == 1 else
             f"{ranks} ranks: rank 0 master{' and worker' if rt.master_evaluates else ''}, "
             f"ranks 1-{ranks - 1} workers (one engine each)")
    return "\n".join([
        f"adapter     {source}, rank {rank}, searched k = floor({config.adapter.alpha_frac} * {rank}) = {k}",
        f"search      d = {modules} modules x 2 factors x {k} = {dim} ({s.parametrization}), "
        f"strategy {population.resolve_name(s.strategy, dim)}, sigma0 {s.sigma0}, "
        f"{'mirrored pairs' if s.mirrored else 'no mirroring'}, mean_lr {s.mean_lr} (preset {s.preset})",
        f"population  {s.popsize} candidates x {s.generations} generations",
        f"roles       {roles}",
        f"batch       {f.prompts_per_candidate} {config.task.train_split} prompts per candidate "
        f"(fitness {f.kind}, {f.prompt_sampling} sampling"
        f"{f', {f.fresh_share:g} fresh' if f.prompt_sampling == 'informative' else ''}); "
        f"{per_gen} candidate-prompt pairs per generation",
        f"tokens      at most {tokens} generated per generation ({config.engine.max_tokens} per prompt), "
        f"{per_gen / engine_count(config, ranks):.0f} prompt evaluations per worker",
        f"evaluation  mean vector on {rt.eval_items} validation items every {rt.eval_every} "
        f"generations{f' (stop after {rt.patience} without gain)' if rt.patience else ''}; the "
        f"best-validated mean is returned; final base/start/mean/selected on {rt.test_items} test items",
        *_engine_lines(config, ranks),
        *(_reward_model_lines(config) if f.kind == "reward_model" else []),
    ])


def _engine_lines(config, ranks: int) -> list[str]:
    """dtype and compile as this machine would choose (a worker elsewhere logs its own choice)."""
    import torch
    choice = resolve_dtype(config.model.dtype)
    lines = [f"dtype       {choice.describe(config.model.dtype)} on this machine"]
    if choice.warning:
        lines.append(f"warning     {choice.warning}")
    if config.engine.backend == "vllm":
        planned = planned_tokens_per_engine(config, ranks)
        eager, why = choose_eager(config.engine.enforce_eager, not torch.cuda.is_available(), planned,
                                  choice.dtype)
        lines.append(f"compile     {'eager' if eager else 'torch.compile'} ({why})")
        lines.append(_vllm_base_line(config, not torch.cuda.is_available(), eager))
    return lines


def _vllm_base_line(config, on_cpu: bool, eager: bool) -> str:
    """The checkpoint each vLLM worker serves, its quantization, candidate mode and weight size;
    a missing quantized copy or a merged mode on a quantized base fails here, as at start-up."""
    from essa.engines.mode_choice import resolve_mode
    from essa.quantize.paths import served_checkpoint, served_quantization, weight_bytes
    m, e = config.model, config.engine
    served = served_checkpoint(resolve_model_path(m.path), m.quantization, m.quantized_path)
    quant = served_quantization(served, m.quantization)
    mode = resolve_mode(e.mode, quant, on_cpu, e.tensor_parallel_size, eager)
    size = weight_bytes(served)
    stored = f"{_si(size)}B of weights as stored" if size else "no safetensors files"
    label = {"int8": "int8 (W8A8)", "int4": "int4 (W4A16)"}.get(quant, quant)
    return f"base        {served} ({label}): {stored}, loaded by every worker; candidates {mode} mode"


def _reward_model_lines(config) -> list[str]:
    """The reward model: folder checked (a bad one is an error naming it), size from the
    safetensors headers (or config.json), memory per worker in the dtype it will run in."""
    from essa.reward_model import check_reward_model, estimate_parameters, weight_stats
    from essa.reward_model.scorer import resolve_device
    rm = config.fitness.reward_model
    info = check_reward_model(rm.path, rm.output)
    stats = weight_stats(info.folder)
    params = stats[0] if stats else estimate_parameters(info.config)
    device = resolve_device(rm.device, rm.dtype)  # int8 on the CPU: refused here too
    run_dtype = "int8" if rm.dtype == "int8" else resolve_dtype(rm.dtype, probe_device(device)).dtype
    per_param = {"int8": 1, "bfloat16": 2, "float16": 2, "float32": 4}[run_dtype]
    if params is None:
        size = "size unknown (no safetensors files, config.json without decoder sizes)"
    else:
        source = (f"safetensors headers, {_si(stats[1])}B as stored" if stats
                  else "about, from config.json: no safetensors files")
        size = (f"{_si(params)} parameters ({source}); about {_si(params * per_param)}B of weights "
                f"in {run_dtype} on {device} in every worker, beside the engine")
    baseline = "on (the base model's answers scored too)" if rm.baseline else "off"
    return [f"fitness     reward model {info.folder}: {info.architecture}, output {info.index} "
            f"({info.label!r}) of {len(info.labels)}, batch {rm.batch_size} pairs, max_length "
            f"{rm.max_length}, baseline {baseline}",
            f"rm memory   {size}"]


def _si(n: float) -> str:
    """1.57e6 -> '1.57 M', 7.5e9 -> '7.5 G' (three significant digits)."""
    for factor, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= factor:
            return f"{n / factor:.3g} {prefix}"
    return f"{n:.0f} "
