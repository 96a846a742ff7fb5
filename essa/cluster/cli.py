"""``essa sweep``: hyperparameter sweeps as SLURM array jobs (one cell = one essa-train run).

    essa sweep plan    SWEEP.yaml                     # the cells, their overrides and run names
    essa sweep sbatch  SWEEP.yaml --dry-run           # print: sbatch --array=0-(n-1) ... essa-sweep.sbatch
    essa sweep sbatch  SWEEP.yaml [-- --partition=gpu] # submit (extra sbatch options after --)
    essa sweep cell    SWEEP.yaml --index 3 --dry-run  # the essa-train command of cell 3
    essa sweep cell    SWEEP.yaml                      # run cell $SLURM_ARRAY_TASK_ID here
    essa sweep summary SWEEP.yaml [--csv out.csv]      # one table over every cell's run directory

A sweep file names a base config, a grid of ``section.field: [values]`` (cartesian product, last key
fastest), optional fixed overrides (``set``), short ``labels`` and ``slurm`` options; see
docs/cluster.md and launch/sweeps/. Exit status: 0 ok, 2 a sweep, config or index error.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

from essa.cli.train import main as train
from essa.cluster.job import plan_cell
from essa.cluster.slurm import array_spec, format_command, index_from_env, sweep_sbatch_command
from essa.cluster.summary import sweep_rows, to_csv, to_markdown
from essa.cluster.sweep import SweepError, load_cell_config, load_sweep
from essa.config import ConfigError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="essa sweep", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    p = sub.add_parser("plan", help="list the cells: index, run name, --set overrides")
    p.add_argument("sweep", metavar="SWEEP.yaml")
    p.add_argument("--no-check", action="store_true",
                   help="do not load and validate every cell's config")

    p = sub.add_parser("cell", help="the essa-train command of one cell: print it or run it")
    p.add_argument("sweep", metavar="SWEEP.yaml")
    p.add_argument("--index", "-i", type=int,
                   help="cell index, 0-based (default: $SLURM_ARRAY_TASK_ID)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the essa-train command (with --resume when the cell has a "
                   "checkpoint) and exit")
    p.add_argument("--job", action="store_true",
                   help="print the key=value job plan the batch scripts read (run_dir, resume, "
                   "done, tensor_parallel, warm_start, arg=...) and exit")

    p = sub.add_parser("sbatch", help="submit the sweep as one array job (--array=0-(n-1))")
    p.add_argument("sweep", metavar="SWEEP.yaml")
    p.add_argument("--dry-run", action="store_true", help="print the sbatch command, submit nothing")
    p.add_argument("--max-parallel", type=int, default=0, metavar="K",
                   help="run at most K cells at once (--array=0-(n-1)%%K)")
    p.epilog = ("More sbatch options go after '--' and win over the sweep file's slurm section, "
                "e.g.: essa sweep sbatch S.yaml -- --partition=gpu --time=12:00:00")

    p = sub.add_parser("summary", help="one table over the cells' run directories")
    p.add_argument("sweep", metavar="SWEEP.yaml")
    p.add_argument("--format", choices=["markdown", "csv"], default="markdown",
                   help="what to print (default markdown)")
    p.add_argument("--csv", metavar="FILE", help="also write the table as CSV to FILE")
    p.add_argument("--runs-root", metavar="DIR",
                   help="folder holding the cells' run directories (default: each cell's output_dir)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Dispatch one action; sweep, config and index errors print one line and return 2."""
    argv = list(sys.argv[2:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []  # sbatch options, passed through
    argv = argv[:argv.index("--")] if "--" in argv else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    if extra and args.action != "sbatch":
        parser.error(f"options after '--' are for 'sbatch' only, got {extra}")
    args.extra = extra
    try:
        return ACTIONS[args.action](args)
    except (SweepError, ConfigError) as exc:
        print(f"essa sweep: {exc}", file=sys.stderr)
        return 2


def _plan(args) -> int:
    sweep = load_sweep(args.sweep)
    print(f"sweep {sweep.name}: {sweep.size} cells over {', '.join(sweep.grid)}; base {sweep.base}")
    print(f"array: --array={array_spec(sweep.size)}")
    for cell in sweep.cells():
        if not args.no_check:
            try:
                load_cell_config(sweep, cell)
            except ConfigError as exc:
                raise SweepError(f"cell {cell.index} ({cell.label}): {exc}") from None
        print(f"{cell.index:4d}  {cell.run_name}")
        print("      " + " ".join(f"--set {o}" for o in cell.overrides))
    return 0


def _cell(args) -> int:
    index = args.index if args.index is not None else index_from_env()
    plan = plan_cell(args.sweep, index)
    if args.job:
        print("\n".join(plan.lines()))
        return 0
    command = ["essa-train", *plan.train_args()]
    if args.dry_run:
        print(format_command(command))
        return 0
    if plan.done:
        print(f"essa sweep: cell {index} is done ({plan.run_dir}/summary.json); nothing to run")
        return 0
    print(f"essa sweep: cell {index}: {format_command(command)}", flush=True)
    return train(plan.train_args())


def _sbatch(args) -> int:
    sweep = load_sweep(args.sweep)
    command = sweep_sbatch_command(sweep, args.max_parallel, args.extra)
    if args.dry_run:
        print(format_command(command))
        return 0
    if shutil.which("sbatch") is None:
        print("essa sweep: sbatch is not on PATH: submit from a SLURM login node, or print the "
              f"command with --dry-run:\n  {format_command(command)}", file=sys.stderr)
        return 2
    for cell in sweep.cells():  # fail here, not in n array tasks
        load_cell_config(sweep, cell)
    print(format_command(command), flush=True)
    return subprocess.run(command).returncode


def _summary(args) -> int:
    sweep = load_sweep(args.sweep)
    rows = sweep_rows(sweep, Path(args.runs_root) if args.runs_root else None)
    if args.csv:
        Path(args.csv).write_text(to_csv(sweep, rows))
    sys.stdout.write(to_csv(sweep, rows) if args.format == "csv" else to_markdown(sweep, rows))
    return 0


ACTIONS = {"plan": _plan, "cell": _cell, "sbatch": _sbatch, "summary": _summary}
