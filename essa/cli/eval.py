"""``essa-eval``: accuracy of a model (optionally with an adapter) on benchmark datasets.

    essa-eval --datasets arithmetic --limit 100                 # the demo model, greedy
    essa-eval --model /path/to/hf --datasets gsm8k,math500 --limit 200
    essa-eval --datasets math500 --samples 8 --temperature 0.6  # avg@8 and pass@k

Writes ``summary.json`` and ``completions-<dataset>.jsonl`` into ``--output`` and prints a table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

from essa.cli.common import add_config_args, config_from_args


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="essa-eval", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser)
    parser.add_argument("--model", help="base model folder or alias (default: the config's model.path)")
    parser.add_argument("--adapter", help="a PEFT LoRA adapter folder to apply, or an essa-train run "
                        "directory (its adapter_mean/)")
    parser.add_argument("--datasets", help="comma-separated: arithmetic, gsm8k, math500, aime24, "
                        "amc23, minerva_math, olympiadbench, or a file path (default: the config's task)")
    parser.add_argument("--split", default="test", help="split to evaluate (default: test)")
    parser.add_argument("--limit", type=int, help="evaluate only the first N items of each dataset")
    parser.add_argument("--samples", type=int, default=1,
                        help="samples per item; >1 reports avg@k and pass@k (set --temperature > 0)")
    parser.add_argument("--temperature", type=float, help="sampling temperature (default: config, 0)")
    parser.add_argument("--max-tokens", type=int, help="new tokens per completion (default: config)")
    parser.add_argument("--output", help="output folder (default: <output_dir>/eval-<time>)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.samples > 1 and not (args.temperature or 0) > 0:
        raise SystemExit("essa-eval: --samples > 1 needs --temperature > 0 (greedy samples are identical)")
    if args.limit is not None and args.limit < 1:
        raise SystemExit("essa-eval: --limit must be >= 1")
    config = config_from_args(args)
    if args.model:
        config.model.path = args.model
    if args.max_tokens:
        config.engine.max_tokens = args.max_tokens
    if args.temperature is not None:
        config.engine.temperature = args.temperature
    names = [d.strip() for d in (args.datasets or config.task.dataset).split(",") if d.strip()]
    output = Path(args.output or Path(config.output_dir) / f"eval-{time.strftime('%Y%m%d-%H%M%S')}")

    # Load every dataset before the engine starts: a wrong name or path fails in a second.
    from essa.data import build_prompts, load_task
    from essa.rewards import get_reward
    tasks = {}
    for name in names:
        task = load_task(dataclasses.replace(config.task, dataset=name))
        examples = task.split(args.split)[: args.limit]
        tasks[name] = (task, examples)
    adapter = None
    if args.adapter:
        from essa.adapters.peft_io import read_adapter
        args.adapter = str(adapter_folder(Path(args.adapter)))
        adapter = read_adapter(args.adapter)  # validates the folder before the engine starts

    from essa.engines import make_engine, sampling_from_config
    from essa.evaluation.evaluate import evaluate
    from essa.evaluation.metrics import summarize_scores
    from essa.rundir import setup_logging

    output.mkdir(parents=True, exist_ok=True)
    log = setup_logging(output)
    log.info("loading %s with the %s engine ...", config.model.path, config.engine.backend)
    candidate = None
    if adapter is not None:  # read once, applied from memory for every dataset
        from essa.engines.base import LoraCandidate
        candidate = LoraCandidate(adapter.tensors, adapter.config, name=args.adapter)
        config.adapter.rank = adapter.rank
    engine = make_engine(config.model, config.engine, config.adapter)
    sampling = sampling_from_config(config.engine)
    sampling.n = args.samples
    summary = {"model": config.model.path, "adapter": args.adapter, "split": args.split,
               "samples": args.samples, "temperature": sampling.temperature,
               "max_tokens": sampling.max_tokens, "datasets": {}}
    for name, (task, examples) in tasks.items():
        t0 = time.time()
        prompts = build_prompts(engine.tokenizer, examples, task.instruction, config.model.chat_template)
        log.info("%s: %d items ...", name, len(examples))
        result = evaluate(engine, prompts, examples, get_reward(task.reward), sampling,
                          candidate=candidate)
        if args.samples > 1:
            stats = summarize_scores(sample_scores=result.scores, k=args.samples).as_dict()
        else:
            stats = summarize_scores(greedy_scores=[s[0] for s in result.scores]).as_dict()
        stats.update(reward=task.reward, tokens=result.tokens, seconds=round(time.time() - t0, 1))
        summary["datasets"][name] = stats
        with open(output / f"completions-{name}.jsonl", "w", encoding="utf-8") as f:
            for ex, cs, scores in zip(examples, result.completions, result.scores):
                f.write(json.dumps({"id": ex.id, "question": ex.question, "gold": ex.answer,
                                    "completions": [c.text for c in cs], "scores": scores}) + "\n")
    (output / "summary.json").write_text(json.dumps(summary, indent=2))
    _print_table(summary)
    print(f"results: {output / 'summary.json'}")
    engine.close()
    return 0


def adapter_folder(path: Path) -> Path:
    """A PEFT folder as given, or a run directory's searched adapter (adapter_mean, then _best)."""
    for name in ("adapter_mean", "adapter_best"):
        if not (path / "adapter_config.json").is_file() and (path / name / "adapter_config.json").is_file():
            return path / name
    return path


def _print_table(summary: dict) -> None:
    from rich.console import Console
    from rich.table import Table
    table = Table(title=f"essa-eval: {summary['model']}" + (f" + {summary['adapter']}" if summary['adapter'] else ""))
    for col in ("dataset", "items", "greedy acc", "avg@k", "pass@k", "tokens", "seconds"):
        table.add_column(col, justify="right" if col != "dataset" else "left")
    fmt = lambda v: "-" if v is None else f"{100 * v:.1f}%"
    for name, s in summary["datasets"].items():
        table.add_row(name, str(s["items"]), fmt(s["greedy_accuracy"]), fmt(s["avg_at_k"]),
                      fmt(s["pass_at_k"]), str(s["tokens"]), str(s["seconds"]))
    Console(stderr=False).print(table)


if __name__ == "__main__":
    raise SystemExit(main())
