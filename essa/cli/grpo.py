"""``essa-grpo``: the GRPO baseline (TRL's GRPOTrainer) on the same set-up as an essa-train run.

    essa-grpo --config launch/configs/demo-cpu.yaml --set name=demo-grpo
    essa-grpo --config launch/configs/demo-cpu.yaml --set name=grpo-10min \\
        --set grpo.max_wall_time_s=600 --set grpo.steps=100000
    essa compare runs/demo-cpu runs/grpo-10min          # accuracy vs time and tokens, both runs
    accelerate launch --num_processes 8 --multi_gpu -m essa.cli.grpo --config X.yaml   # 8 GPUs

Same model, starting adapter (``adapter.init``: the cached SFT warm start, fresh, or a folder),
training prompts and reward as essa-train; the ``grpo`` section holds GRPO's own knobs (see
docs/grpo.md). Writes ``<output_dir>/<name>/``: config.yaml, run.log, metrics.jsonl, summary.json,
adapter_final/. Runs on the CPU in one process, or on CUDA (``grpo.device``): one process, or one
per GPU under ``accelerate launch`` (launch/slurm/essa-grpo.sbatch). ``--check`` validates the
config, decides the set-up and checks the model folder, the adapter folder and the run directory,
without loading a model; it prints ``key=value`` lines (run_dir, setup, processes, warm_start,
max_wall_time_s, arg). Exit 0, or 2 on a config error, a missing model or adapter folder, or when
the run directory already holds a run (``--force`` replaces it).
"""

from __future__ import annotations

import argparse
import sys

from essa.cli.common import add_config_args, config_from_args
from essa.config import ConfigError
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
    parser.add_argument("--check", action="store_true",
                        help="check the config, set-up and run directory; print the plan, exit")
    parser.add_argument("--progress", action="store_true", help="show TRL's progress bar")
    return parser


def _warm_start_needed(config) -> bool:
    """adapter.init is sft and the warm-start cache is not filled yet."""
    if config.adapter.init != "sft":
        return False
    from essa.sft.cache import is_complete, warm_start_dir
    try:
        return not is_complete(warm_start_dir(config))
    except OSError:  # the model folder is missing: essa-sft will say so
        return True


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    config = config_from_args(args)
    from pathlib import Path

    if args.print_config:
        print(to_yaml(config), end="")
        return 0

    from essa.baselines.grpo import launch_ranks, probe_grpo_setup, run_grpo

    # Under `accelerate launch` (torchrun) every process runs this; RANK says which one it is (0, or
    # unset, alone). Only rank 0 checks, replaces and creates the run directory and writes run.log:
    # the others would find the files rank 0 just made and refuse. If rank 0 refuses (exit 2), the
    # launcher stops the others.
    rank, _, processes = launch_ranks()
    try:
        setup = probe_grpo_setup(config)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    run_dir = Path(config.output_dir) / config.name
    existing = []
    if rank == 0 or args.check:
        existing = [name for name in RUN_FILES if (run_dir / name).exists()]
        if existing and not args.force:
            print(f"essa-grpo: {run_dir} already holds a run ({', '.join(existing)}); choose another "
                  f"--set name=... or pass --force to replace it", file=sys.stderr)
            return 2
    if args.check:
        from essa.models import resolve_model_path
        try:  # what run_grpo would stop at first, without loading anything
            resolve_model_path(config.model.path)
            if config.adapter.init not in ("sft", "fresh"):
                from essa.baselines.grpo import starting_adapter_folder
                starting_adapter_folder(config)
        except FileNotFoundError as exc:
            print(f"essa-grpo: {exc}", file=sys.stderr)
            return 2
        config_args = ["--config", args.config] if args.config else []
        for item in args.overrides:
            config_args += ["--set", item]
        print("\n".join([f"run_dir={run_dir}", f"setup={setup.describe()}", f"processes={processes}",
                         f"warm_start={int(_warm_start_needed(config))}",
                         f"max_wall_time_s={config.grpo.max_wall_time_s:g}",
                         *(f"arg={a}" for a in config_args)]))
        return 0
    if rank == 0:
        for name in existing:
            (run_dir / name).unlink()
        run_dir = create_run_dir(config)
        setup_logging(run_dir)
    else:
        import logging
        setup_logging(None, level=logging.WARNING)  # the console only, and only what goes wrong
    try:
        run_grpo(config, run_dir, progress=args.progress and rank == 0, setup=setup)
    except ConfigError as exc:  # e.g. adapter.target_modules the model lacks
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:  # a missing model or adapter folder (config errors ended above)
        print(f"essa-grpo: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
