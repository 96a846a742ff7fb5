"""``essa-eval``: accuracy of a model (optionally with an adapter) on benchmark datasets.

    essa-eval --datasets arithmetic --limit 100                 # the demo model, greedy
    essa-eval --model /path/to/hf --datasets gsm8k,math500 --limit 200
    essa-eval --datasets math500 --samples 8 --temperature 0.6  # avg@8 and pass@k

    essa-eval --datasets /data/my_problems.jsonl                # every row of a local file
    essa-eval --datasets ifeval --max-tokens 512                # IFEval's four numbers

A benchmark is scored on its test split (the config's ``task.test_split``), a file named by path on
all its rows; ``--split`` picks a split for both. Writes ``summary.json`` (after every dataset)
and ``completions-<name>.jsonl`` (``<name>`` a slug of the dataset name or file stem) into
``--output`` and prints a table. A dataset scored by the ifeval reward also gets IFEval's
standard numbers (prompt- and instruction-level accuracy, strict and loose) and the strict
accuracy of every constraint type.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
import time
from pathlib import Path

from essa.cli.common import add_config_args, config_from_args


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="essa-eval", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser)
    parser.add_argument("--model", help="base model folder or alias (default: the config's model.path)")
    parser.add_argument("--adapter", help="a PEFT LoRA adapter folder to apply, or an essa-train run "
                        "directory (the adapter it returns: adapter_selected/, else adapter_mean/)")
    parser.add_argument("--datasets", help="comma-separated: arithmetic, gsm8k, math500, aime24, "
                        "amc23, minerva_math, olympiadbench, ifeval, or a file path (default: the config's task)")
    parser.add_argument("--split", help="split to evaluate (default: a benchmark's test split, "
                        "every row of a file named by path)")
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
    from essa.data import build_prompts
    from essa.rewards import get_reward
    from essa.atomic import atomic_write
    tasks = {}
    for name in names:
        task, examples, split = load_examples(config.task, name, args.split)
        tasks[name] = (task, examples[: args.limit], split)
    files = completions_files(names)
    adapter = None
    if args.adapter:  # read once and validated before the engine starts; applied from memory
        from essa.adapters.peft_io import read_adapter  # imports torch
        args.adapter = str(adapter_folder(Path(args.adapter)))
        adapter = read_adapter(args.adapter)
        config.adapter.rank = adapter.rank

    from essa.engines import make_engine, sampling_from_config
    from essa.engines.factory import stop_rule_for
    from essa.evaluation.evaluate import evaluate
    from essa.evaluation.metrics import summarize_scores
    from essa.rundir import setup_logging

    output.mkdir(parents=True, exist_ok=True)
    log = setup_logging(output)
    log.info("loading %s with the %s engine ...", config.model.path, config.engine.backend)
    planned = sum(len(ex) for _, ex, _ in tasks.values()) * args.samples * config.engine.max_tokens
    engine = make_engine(config.model, config.engine, config.adapter, planned_tokens=planned)
    log.info("engine: %s", engine.describe())
    sampling = sampling_from_config(config.engine)
    sampling.n = args.samples
    summary = {"model": config.model.path, "adapter": args.adapter, "split": args.split,
               "samples": args.samples, "temperature": sampling.temperature,
               "max_tokens": sampling.max_tokens, "datasets": {}}
    failed = []  # output files that could not be written; the scores are kept in summary.json
    for name, (task, examples, split) in tasks.items():
        t0 = time.time()
        prompts = build_prompts(engine.tokenizer, examples, task.instruction, config.model.chat_template)
        log.info("%s: %d items (%s) ...", name, len(examples), split)
        # the config's reward options belong to its own task; other datasets use their defaults
        options = config.task.reward_options if name == config.task.dataset else {}
        # each dataset's own reward picks its stop rule (engine.stop_at_answer), as in training
        task_sampling = dataclasses.replace(sampling, stop_rule=stop_rule_for(config.engine, task.reward, options))
        result = evaluate(engine, prompts, examples, get_reward(task.reward, **options), task_sampling,
                          candidate=adapter.candidate if adapter else None)
        if args.samples > 1:
            stats = summarize_scores(sample_scores=result.scores, k=args.samples).as_dict()
        else:
            stats = summarize_scores(greedy_scores=[s[0] for s in result.scores]).as_dict()
        stats.update(split=split, reward=task.reward, tokens=result.tokens,
                     seconds=round(time.time() - t0, 1), completions=files[name])
        if task.reward == "ifeval":
            stats["ifeval"] = ifeval_numbers(result)
        summary["datasets"][name] = stats
        path = output / files[name]
        try:
            with open(path, "w", encoding="utf-8") as f:
                for ex, cs, scores in zip(examples, result.completions, result.scores):
                    f.write(json.dumps({"id": ex.id, "question": ex.question, "gold": ex.answer,
                                        "completions": [c.text for c in cs], "scores": scores}) + "\n")
        except OSError as e:
            log.error("%s: could not write %s (%s); its scores go to summary.json", name, path, e)
            stats["completions"] = None
            failed.append(str(path))
        # Rewritten after every dataset, so a later crash keeps the datasets already scored.
        try:
            atomic_write(output / "summary.json", json.dumps(summary, indent=2))
        except OSError as e:
            log.error("could not write %s (%s)", output / "summary.json", e)
            failed.append(str(output / "summary.json"))
    engine.close()
    _print_table(summary)  # the scores on screen even when no file could be written
    if failed:
        print(f"essa-eval: could not write {', '.join(sorted(set(failed)))}", file=sys.stderr)
        return 1
    print(f"results: {output / 'summary.json'}")
    return 0


ALL_ROWS = "all rows"


def is_file_dataset(name: str) -> bool:
    """True when ``name`` is a local file rather than a benchmark name, a folder or an HF id."""
    from essa.data.loading import KNOWN_DATASETS
    # Known names win in load_task, so a stray file called "gsm8k" in the cwd changes nothing.
    return name != "arithmetic" and name not in KNOWN_DATASETS and Path(name).is_file()


def eval_split(task_cfg, name: str, split: str | None) -> str | None:
    """The split to score: the one asked for, else None (every row) for a file, else the test split."""
    if split:
        return split
    return None if is_file_dataset(name) else task_cfg.test_split


def load_examples(task_cfg, name: str, split: str | None):
    """(task, examples, split label) for one dataset; the label is the split or ``"all rows"``."""
    from essa.data import load_task
    chosen = eval_split(task_cfg, name, split)
    if chosen is not None:
        task = load_task(dataclasses.replace(task_cfg, dataset=name))
        return task, task.split(chosen), chosen
    # A file is all train split to the loader, which carves a validation split off it for
    # training; with no validation split asked for, the splits together are the file in order.
    task = load_task(dataclasses.replace(task_cfg, dataset=name, validation_split=""))
    return task, [ex for rows in task.splits.values() for ex in rows], ALL_ROWS


def slug(name: str) -> str:
    """A file-name-safe stem for a dataset name or path: ``/d/My Set.jsonl`` -> ``My-Set``."""
    stem = Path(name.rstrip("/\\")).name
    for ext in (".jsonl", ".json", ".parquet"):
        if stem.endswith(ext):
            stem = stem[: -len(ext)]
    return re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-.") or "dataset"


def completions_files(names: list[str]) -> dict[str, str]:
    """``completions-<slug>.jsonl`` for every dataset, numbered where two slugs collide."""
    files, used = {}, set()
    for name in names:
        base = slug(name)
        stem, n = base, 1
        while stem in used:
            n += 1
            stem = f"{base}-{n}"
        used.add(stem)
        files[name] = f"completions-{stem}.jsonl"
    return files


def ifeval_numbers(result) -> dict:
    """IFEval's four numbers on the first sample of every item, and each constraint type's
    strict accuracy (``{id: [passed, total]}``)."""
    from essa.rewards.ifeval import ifeval_summary
    texts = [cs[0].text for cs in result.completions]
    return ifeval_summary(texts, [e.answer for e in result.examples],
                          prompts=[e.question for e in result.examples])


def adapter_folder(path: Path) -> Path:
    """A PEFT folder as given, or the adapter a run directory returns (adapter_selected, the
    best-validated mean; then adapter_mean, then adapter_best)."""
    for name in ("adapter_selected", "adapter_mean", "adapter_best"):
        if not (path / "adapter_config.json").is_file() and (path / name / "adapter_config.json").is_file():
            return path / name
    return path


def _print_table(summary: dict) -> None:
    from rich.console import Console
    from rich.table import Table
    table = Table(title=f"essa-eval: {summary['model']}" + (f" + {summary['adapter']}" if summary['adapter'] else ""))
    # A long path folds onto more lines instead of being cut to "/tmp/da…".
    table.add_column("dataset", overflow="fold")
    table.add_column("split", no_wrap=True)
    for col in ("items", "greedy acc", "avg@k", "pass@k", "tokens", "seconds"):
        table.add_column(col, justify="right")
    fmt = lambda v: "-" if v is None else f"{100 * v:.1f}%"
    for name, s in summary["datasets"].items():
        table.add_row(name, s["split"], str(s["items"]), fmt(s["greedy_accuracy"]), fmt(s["avg_at_k"]),
                      fmt(s["pass_at_k"]), str(s["tokens"]), str(s["seconds"]))
    # A pipe or a log file has no width to fit: rich's default of 80 would fold benchmark names.
    console = Console(width=None if sys.stdout.isatty() else 120)
    console.print(table)
    for name, s in summary["datasets"].items():
        if "ifeval" in s:
            console.print(_ifeval_table(name, s["ifeval"]))


def _ifeval_table(name: str, numbers: dict):
    """IFEval's standard four numbers, as its own report lays them out."""
    from rich.table import Table
    table = Table(title=f"{name}: IFEval accuracy")
    for col in ("level", "strict", "loose"):
        table.add_column(col, justify="right" if col != "level" else "left")
    for level in ("prompt", "instruction"):
        table.add_row(f"{level}-level", f"{100 * numbers[f'{level}_strict']:.1f}%",
                      f"{100 * numbers[f'{level}_loose']:.1f}%")
    return table


if __name__ == "__main__":
    raise SystemExit(main())
