"""The sbatch side of a sweep: the array job's command line and the cell index of a task."""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

from essa.cluster.sweep import Sweep, SweepError, display_path

SCRIPTS_DIR = Path(__file__).resolve().parents[2] / "launch" / "slurm"
SWEEP_SCRIPT = SCRIPTS_DIR / "essa-sweep.sbatch"
TRAIN_SCRIPT = SCRIPTS_DIR / "essa-train.sbatch"
ARRAY_ENV = "SLURM_ARRAY_TASK_ID"
_OPTION = re.compile(r"^[a-z][a-z0-9-]*$")


def index_from_env(env: dict | None = None) -> int | None:
    """The cell index of this array task ($SLURM_ARRAY_TASK_ID), or None when it is not set."""
    text = (os.environ if env is None else env).get(ARRAY_ENV, "").strip()
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        raise SweepError(f"{ARRAY_ENV}={text!r} is not an integer cell index") from None


def array_spec(n_cells: int, max_parallel: int = 0) -> str:
    """``0-(n-1)``, with ``%K`` when at most K cells may run at once."""
    if n_cells < 1:
        raise SweepError("a sweep needs at least one cell")
    spec = f"0-{n_cells - 1}"
    return f"{spec}%{max_parallel}" if max_parallel > 0 else spec


def sbatch_options(options: dict) -> list[str]:
    """The sweep file's ``slurm`` mapping as ``--key=value`` flags (``true`` gives ``--key``)."""
    out = []
    for key, value in options.items():
        key = str(key).replace("_", "-")
        if not _OPTION.match(key) or key == "array":
            raise SweepError(f"slurm.{key}: not an sbatch long option name (the array is set by "
                             "essa sweep itself)" if key == "array" else
                             f"slurm.{key}: not an sbatch long option name like 'gpus-per-node'")
        if value is True:
            out.append(f"--{key}")
        elif value is not False and value is not None:
            out.append(f"--{key}={value}")
    return out


def sweep_sbatch_command(sweep: Sweep, max_parallel: int = 0, extra: list[str] | None = None,
                         script: Path = SWEEP_SCRIPT) -> list[str]:
    """``sbatch --array=0-(n-1) --job-name=<name> <slurm options> <extra> SCRIPT SWEEP.yaml``.

    Options given later win in sbatch, so ``extra`` (the command line) overrides the file.
    """
    return ["sbatch", f"--array={array_spec(sweep.size, max_parallel)}", f"--job-name={sweep.name}",
            *sbatch_options(sweep.slurm), *(extra or []), display_path(script),
            display_path(sweep.path)]


def format_command(argv: list[str]) -> str:
    """A shell-quoted command line, ready to paste."""
    return shlex.join(argv)
