"""bf16 vs bitsandbytes INT8 vs nf4 (INT4) with the transformers engine on the CPU demo model.

For each mode, in a fresh subprocess (so that memory and load time are its own): engine load time,
peak RSS and RSS growth over the load, the model's own memory footprint, greedy generation
tokens/s on ``--speed-prompts`` validation prompts of the arithmetic task, and greedy accuracy on
``--items`` validation items (the task's reward, strict ``#### n``). With ``--adapter FOLDER`` the
same figures are taken under that adapter (both base and adapter rows in the one accuracy pass).
``tok/s zero-LoRA`` is the base model under a rank-8 q/k/v/o adapter whose B is zero: the same
completions as the base model, so the ratio to ``tok/s base`` is the cost of the LoRA hooks alone.
Ratios are against bf16 of the same run. ``--items 0`` skips the accuracy pass.

    PYTHONPATH=. .venv/bin/python benchmarks/quantization.py                       # defaults below
    PYTHONPATH=. .venv/bin/python benchmarks/quantization.py --items 300 --adapter runs/sft/adapter
    PYTHONPATH=. .venv/bin/python benchmarks/quantization.py --json runs/quant.json
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, fields

MODES = ("none", "int8", "int4")
LABELS = {"none": "bf16", "int8": "INT8 (bnb)", "int4": "nf4 (bnb 4-bit)"}


@dataclass
class Args:
    model: str = "smollm2-135m-instruct"  # model folder or alias
    modes: str = ",".join(MODES)  # comma-separated subset of none,int8,int4
    items: int = 100  # validation items scored for accuracy
    speed_prompts: int = 16  # prompts in the tokens/s measurement
    max_tokens: int = 64  # most new tokens per completion
    batch_rows: int = 64  # max_batch_rows of the engine
    threads: int = 1  # torch threads (1 is fastest on the shared 2-core machine; 0: torch default)
    adapter: str = ""  # optional PEFT adapter folder scored beside the base model
    json: str = ""  # also write the raw figures here
    worker: str = ""  # internal: run one mode in this process and print its figures as JSON


def parse() -> Args:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for f in fields(Args):
        parser.add_argument(f"--{f.name.replace('_', '-')}", type=type(f.default), default=f.default)
    return Args(**vars(parser.parse_args()))


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def _tokens_per_s(engine, prompts, candidate, sampling) -> float:
    start = time.perf_counter()
    outs = engine.generate(prompts, [candidate], sampling)[0]
    return sum(s[0].num_tokens for s in outs) / (time.perf_counter() - start)


def zero_lora(model_dir):
    """A rank-8 q/k/v/o LoraCandidate with B = 0: LoRA work, base model outputs."""
    import tempfile

    from essa.adapters.init import write_fresh_adapter
    from essa.adapters.peft_io import LoraCandidate, read_adapter
    with tempfile.TemporaryDirectory() as tmp:
        adapter = read_adapter(write_fresh_adapter(model_dir, f"{tmp}/zero", rank=8))
    factors = {m: (a, b.zero_()) for m, (a, b) in adapter.candidate.factors.items()}
    return LoraCandidate(factors, adapter.scale, adapter.config, "zero")


def run_mode(args: Args) -> dict:
    """Every figure for one quantization mode (runs inside the worker subprocess)."""
    from essa.config import EngineConfig, ModelConfig, RunConfig
    from essa.data import build_prompts, load_task
    from essa.engines.base import SamplingSettings
    from essa.engines.hf_engine import TransformersEngine
    from essa.models import resolve_model_path
    import transformers  # noqa: F401  (imported before the clock starts: load time is the model's)

    path = resolve_model_path(args.model)
    rss0 = _rss_mib()
    start = time.perf_counter()
    engine = TransformersEngine(path, ModelConfig(path=str(path), quantization=args.worker),
                                EngineConfig(max_tokens=args.max_tokens), threads=args.threads,
                                max_batch_rows=args.batch_rows)
    load_s = time.perf_counter() - start
    fig = {"mode": args.worker, "load_s": load_s, "rss_load_mib": _rss_mib() - rss0,
           "footprint_mib": engine.model.get_memory_footprint() / 2**20}

    task = load_task(RunConfig().task)
    examples = task.split("validation")[: max(args.items, args.speed_prompts)]
    prompts = build_prompts(engine.tokenizer, examples, task.instruction)
    sampling = SamplingSettings(max_tokens=args.max_tokens)
    engine.generate(prompts[:2], [None], SamplingSettings(max_tokens=4))  # warm-up
    candidates = [None] + ([args.adapter] if args.adapter else [])
    fig["tok_s"] = [_tokens_per_s(engine, prompts[: args.speed_prompts], c, sampling)
                    for c in candidates]
    fig["tok_s_zero_lora"] = _tokens_per_s(engine, prompts[: args.speed_prompts], zero_lora(path),
                                           sampling)
    fig["accuracy"], fig["accuracy_pass_s"] = [float("nan")] * len(candidates), 0.0
    if args.items > 0:
        fig.update(accuracy_pass(engine, task, examples[: args.items], prompts, candidates,
                                 sampling))
    fig["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    engine.close()
    return fig


def accuracy_pass(engine, task, examples, prompts, candidates, sampling) -> dict:
    """Greedy accuracy of every candidate on ``examples``, in one generate call."""
    from essa.rewards import get_reward

    reward = get_reward(task.reward)
    golds = [e.answer for e in examples]
    start = time.perf_counter()
    outs = engine.generate(prompts[: len(examples)], candidates, sampling)
    return {"accuracy_pass_s": time.perf_counter() - start,
            "accuracy": [sum(reward([s[0].text for s in per], golds)) / len(golds) for per in outs]}


def run_worker(args: Args, mode: str) -> dict:
    """Run one mode in a fresh interpreter; its last stdout line is the JSON figures."""
    cmd = [sys.executable, __file__, "--worker", mode]
    for f in fields(Args):
        if f.name not in ("worker", "modes", "json"):
            cmd += [f"--{f.name.replace('_', '-')}", str(getattr(args, f.name))]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{mode} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def table(figs: list[dict], args: Args) -> str:
    """Markdown rows, ratios against the bf16 row when it was run."""
    base = next((f for f in figs if f["mode"] == "none"), None)
    names = ["base"] + (["adapter"] if args.adapter else [])
    head = ("| mode | load s | peak RSS MiB | RSS load MiB | footprint MiB | tok/s zero-LoRA | "
            + " | ".join(f"tok/s {n} | acc {n}" for n in names) + " |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for f in figs:
        def ratio(key, i=None):
            if base is None or f is base:
                return ""
            v, b = (f[key], base[key]) if i is None else (f[key][i], base[key][i])
            return f" ({v / b:.2f}x)" if b else ""
        cells = [LABELS[f["mode"]], f"{f['load_s']:.1f}{ratio('load_s')}",
                 f"{f['peak_rss_mib']:.0f}{ratio('peak_rss_mib')}", f"{f['rss_load_mib']:.0f}",
                 f"{f['footprint_mib']:.0f}{ratio('footprint_mib')}",
                 f"{f['tok_s_zero_lora']:.1f} ({f['tok_s_zero_lora'] / f['tok_s'][0]:.2f}x base)"]
        for i in range(len(names)):
            cells += [f"{f['tok_s'][i]:.1f}{ratio('tok_s', i)}", f"{f['accuracy'][i]:.3f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    args = parse()
    if args.worker:
        print(json.dumps(run_mode(args)))
        return
    figs = []
    for mode in args.modes.split(","):
        figs.append(run_worker(args, mode.strip()))
        print(f"{mode}: {figs[-1]}", file=sys.stderr, flush=True)
    print(f"model {args.model}, {args.items} validation items, {args.speed_prompts} prompts for "
          f"tok/s, max_tokens {args.max_tokens}, threads {args.threads}, greedy")
    print(table(figs, args))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": asdict(args), "figures": figs}, f, indent=2)


if __name__ == "__main__":
    main()
