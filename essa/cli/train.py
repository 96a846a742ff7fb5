"""``essa-train``: one ESSA run (CMA-ES over the singular values of a LoRA adapter).

    essa-train --config launch/configs/demo-cpu.yaml                  # master + 1 worker, one process
    mpirun -n 3 essa-train --config launch/configs/demo-cpu.yaml      # rank 0 master, 2 workers
    essa-train --config launch/configs/demo-cpu.yaml --dry-run        # the plan, no weights loaded
    mpirun -n 5 essa-train --resume runs/demo-cpu                     # continue from its checkpoint

Exit status: 0 done, 2 config or set-up error, 3 a worker failed (the log names rank, candidate,
cause), 75 stopped by SIGTERM / SIGUSR1 after a checkpoint (requeue and --resume). See docs/runtime.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from essa.cli.common import add_config_args, config_from_args
from essa.config import to_yaml
from essa.runtime.state import check_new_run
from essa.runtime.transport import world


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="essa-train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser)
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved config as YAML and exit")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the plan (search dimension, roles, batch, budget) and exit")
    parser.add_argument("--resume", metavar="RUN_DIR",
                        help="continue the run in RUN_DIR from its checkpoint (its config.yaml is "
                        "read unless --config is given; --set still applies)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    resume = Path(args.resume) if args.resume else None
    if resume is not None and args.config is None:
        if not (resume / "config.yaml").is_file():
            print(f"essa-train: --resume {resume}: no config.yaml there", file=sys.stderr)
            return 2
        args.config = str(resume / "config.yaml")
    config = config_from_args(args)
    if args.print_config:
        sys.stdout.write(to_yaml(config))
        return 0
    _, size, rank = world()
    if args.dry_run:
        if rank == 0:
            from essa.runtime.plan import describe_plan  # imports torch (essa.adapters)
            try:
                print(describe_plan(config, size))
            except FileNotFoundError as exc:
                print(f"essa-train: {exc}", file=sys.stderr)
                return 2
        return 0
    from essa.runtime.launch import main as launch
    try:
        if resume is None:  # on every rank, so that all of them stop with the message
            check_new_run(Path(config.output_dir) / config.name)
        return launch(config, resume)
    except (FileNotFoundError, FileExistsError) as exc:  # a missing model/adapter/checkpoint,
        print(f"essa-train: {exc}", file=sys.stderr)        # or a new run over an old one
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
