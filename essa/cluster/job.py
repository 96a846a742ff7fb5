"""What one batch job runs: the run directory, whether to resume, and the essa-train arguments.

The batch scripts in ``launch/slurm/`` ask this module once per job (on the batch host, before
any MPI step) and read its answer as ``key=value`` lines:

    python -m essa.cluster.job --config X.yaml [--set k=v ...]     # a single run
    python -m essa.cluster.job --sweep S.yaml --index I            # one cell of a sweep

    run_dir=runs/qwen7b            <output_dir>/<name>
    resume=1                       a committed checkpoint exists there: add --resume RUN_DIR
    done=0                         summary.json is there and the checkpoint reached the budget
    generation=12                  generations committed so far (0 without a checkpoint)
    tensor_parallel=1              GPUs per engine (engine.tensor_parallel_size)
    master_evaluates=0             rank 0 runs an engine too (runtime.master_evaluates)
    warm_start=1                   adapter.init is sft and the warm-start cache is not filled
    arg=--config                   the essa-train / essa-sft arguments, one per line
    arg=launch/configs/x.yaml
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from essa.cluster.slurm import index_from_env
from essa.cluster.sweep import SweepError, display_path, load_sweep
from essa.config import ConfigError, load_config
from essa.runtime.state import CHECKPOINT_DIR, STATE_FILE

SUMMARY_FILE = "summary.json"


@dataclass(frozen=True)
class JobPlan:
    """The decisions a batch script needs for one run."""

    run_dir: Path
    config_args: list[str]  # --config X --set ... (the same for essa-train and essa-sft)
    generation: int  # committed generations (0: no checkpoint)
    budget: int  # search.generations
    tensor_parallel: int
    warm_start_needed: bool
    master_evaluates: bool = False

    @property
    def resume(self) -> bool:
        return (self.run_dir / CHECKPOINT_DIR / STATE_FILE).is_file()

    @property
    def done(self) -> bool:
        return (self.run_dir / SUMMARY_FILE).is_file() and self.generation >= self.budget

    def train_args(self) -> list[str]:
        """essa-train arguments: the config arguments, plus --resume RUN_DIR when resuming."""
        return [*self.config_args, *(["--resume", str(self.run_dir)] if self.resume else [])]

    def lines(self) -> list[str]:
        """The ``key=value`` lines the batch scripts read."""
        out = [f"run_dir={self.run_dir}", f"resume={int(self.resume)}", f"done={int(self.done)}",
               f"generation={self.generation}", f"tensor_parallel={self.tensor_parallel}",
               f"warm_start={int(self.warm_start_needed)}",
               f"master_evaluates={int(self.master_evaluates)}"]
        return out + [f"arg={a}" for a in self.config_args]


def plan_job(config_path: str | Path, overrides: list[str]) -> JobPlan:
    """The plan of ``essa-train --config config_path --set overrides...`` (config is validated)."""
    config = load_config(config_path, overrides)
    run_dir = Path(config.output_dir) / config.name
    state = run_dir / CHECKPOINT_DIR / STATE_FILE
    generation = int(json.loads(state.read_text()).get("generation", 0)) if state.is_file() else 0
    args = ["--config", str(config_path)]
    for item in overrides:
        args += ["--set", item]
    return JobPlan(run_dir, args, generation, config.search.generations,
                   config.engine.tensor_parallel_size, _warm_start_needed(config),
                   config.runtime.master_evaluates)


def plan_cell(sweep_path: str | Path, index: int | None) -> JobPlan:
    """The plan of one cell of a sweep file."""
    sweep = load_sweep(sweep_path)
    cell = sweep.cell(index)
    return plan_job(display_path(sweep.base), cell.overrides)


def _warm_start_needed(config) -> bool:
    """True when the run would train its SFT warm start first (adapter.init sft, not cached)."""
    if config.adapter.init != "sft":
        return False
    try:
        from essa.sft.cache import is_complete, warm_start_dir  # essa.sft's __init__ imports torch
        return not is_complete(warm_start_dir(config))
    except (FileNotFoundError, OSError):  # model folder missing: essa-sft will say so
        return True


def main(argv: list[str] | None = None) -> int:
    """Print the plan's ``key=value`` lines; exit 2 on a config or sweep error."""
    parser = argparse.ArgumentParser(prog="python -m essa.cluster.job", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="run config (a single run)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--sweep", help="sweep file (one cell of an array job)")
    parser.add_argument("--index", type=int, help="cell index (default $SLURM_ARRAY_TASK_ID)")
    args = parser.parse_args(argv)
    try:
        if args.sweep:
            plan = plan_cell(args.sweep, args.index if args.index is not None else index_from_env())
        elif args.config:
            plan = plan_job(args.config, args.overrides)
        else:
            parser.error("give --config (with --set ...) or --sweep (with --index)")
    except (SweepError, ConfigError) as exc:
        print(f"essa job: {exc}", file=sys.stderr)
        return 2
    print("\n".join(plan.lines()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
