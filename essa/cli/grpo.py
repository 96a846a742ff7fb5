"""``essa-grpo``: the GRPO baseline (TRL's GRPOTrainer) on the same set-up as an essa-train run.

    essa-grpo --config launch/configs/demo-cpu.yaml --set name=demo-grpo
    essa-grpo --config launch/configs/demo-cpu.yaml --set name=grpo-10min \\
        --set grpo.max_wall_time_s=600 --set grpo.steps=100000
    essa compare runs/demo-cpu runs/grpo-10min          # accuracy vs time and tokens, both runs

Same model, starting adapter (``adapter.init``: the cached SFT warm start, fresh, or a folder),
training prompts and reward as essa-train; the ``grpo`` section holds GRPO's own knobs (see
docs/grpo.md). Writes ``<output_dir>/<name>/``: config.yaml, run.log, metrics.jsonl, summary.json,
adapter_final/. Runs on the CPU, in one process (no mpirun). Exit 0, or 2 on a config error or when
the run directory already holds a run (``--force`` replaces it).
"""

from __future__ import annotations

import argparse
import sys

from essa.cli.common import add_config_args, config_from_args
from essa.config.loader import to_yaml
from essa.rundir import create_run_dir, setup_logging

RUN_FILES = ("metrics.jsonl", "summary.json", "run.log")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="essa-grpo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser)
    parser.add_argument("--force", action="store_true",
                        help="replace the metrics, log and summary of an existing run of that name")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config, exit")
    parser.add_argument("--progress", action="store_true", help="show TRL's progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    config = config_from_args(args)
    from pathlib import Path


    if args.print_config:
        print(to_yaml(config), end="")
        return 0
    run_dir = Path(config.output_dir) / config.name
    existing = [name for name in RUN_FILES if (run_dir / name).exists()]
    if existing and not args.force:
        print(f"essa-grpo: {run_dir} already holds a run ({', '.join(existing)}); choose another "
              f"--set name=... or pass --force to replace it", file=sys.stderr)
        return 2
    for name in existing:
        (run_dir / name).unlink()

    from essa.baselines.grpo import run_grpo

    run_dir = create_run_dir(config)
    setup_logging(run_dir)
    try:
        run_grpo(config, run_dir, progress=args.progress)
    except FileNotFoundError as exc:  # a missing model or adapter folder (config errors ended above)
        print(f"essa-grpo: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
