"""GRPO vs ESSA at the same wall-time budget: run the GRPO baseline, then `essa compare` it against
an existing essa-train run.

    # 1. an ESSA run (not started by this script), e.g. the CPU demo:
    mpirun -n 2 essa-train --config launch/configs/demo-cpu.yaml
    # 2. GRPO on the same config for as long as that run searched (its summary's wall_time):
    python benchmarks/grpo_vs_essa.py --config launch/configs/demo-cpu.yaml \\
        --essa-run runs/demo-cpu --budget match
    # or a fixed budget in seconds, GRPO knobs overridden, and a fixed target accuracy:
    python benchmarks/grpo_vs_essa.py --config launch/configs/demo-cpu.yaml \\
        --essa-run runs/demo-cpu --budget 600 --set grpo.num_generations=4 --target 0.4

The GRPO run uses the same config (model, adapter.init and its cached SFT warm start, task, reward,
runtime.eval_items / test_items) with ``grpo.max_wall_time_s`` = the budget and ``grpo.steps`` large
enough that the budget is what stops it; it is written to ``<output_dir>/<name>`` (default name:
``<config name>-grpo-<budget>s``). Then ``essa compare ESSA_RUN GRPO_RUN`` prints the table (the
ESSA run first, so GRPO's speed ratio is how many times longer GRPO took to reach the target) and
writes compare.md / compare.png into ``--output`` (default: the GRPO run directory).

Wall time on both sides is training time with evaluation excluded. Compare on the same machine,
with nothing else running: both methods are CPU-bound. Add the printed table and the command to
benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def essa_wall_time(run_dir: Path) -> float:
    """The search wall time of a finished essa-train run (its summary.json)."""
    summary = run_dir / "summary.json"
    if not summary.is_file():
        raise SystemExit(f"--budget match: {summary} not found (is the ESSA run finished?)")
    return float(json.loads(summary.read_text())["wall_time"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", "-c", required=True, help="the run config both methods share")
    parser.add_argument("--essa-run", required=True, type=Path, help="a finished essa-train run directory")
    parser.add_argument("--budget", default="match",
                        help="GRPO wall-time budget in seconds, or 'match' (the ESSA run's wall_time)")
    parser.add_argument("--name", help="GRPO run name (default: <config name>-grpo-<budget>s)")
    parser.add_argument("--set", "-s", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="extra config overrides for the GRPO run")
    parser.add_argument("--max-steps", type=int, default=100000,
                        help="grpo.steps: an upper bound, so that the budget ends the run")
    parser.add_argument("--target", type=float, help="target accuracy for essa compare")
    parser.add_argument("--output", type=Path, help="folder of compare.md/.png (default: the GRPO run)")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(ROOT))
    from essa.config import ConfigError, load_config

    budget = essa_wall_time(args.essa_run) if args.budget == "match" else float(args.budget)
    try:
        config = load_config(args.config, args.overrides)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    name = args.name or f"{config.name}-grpo-{budget:.0f}s"
    overrides = [f"name={name}", f"grpo.max_wall_time_s={budget}", f"grpo.steps={args.max_steps}",
                 *args.overrides]
    grpo_cmd = [sys.executable, "-m", "essa.cli.grpo", "--config", args.config,
                *[a for o in overrides for a in ("--set", o)]]
    print("$ " + " ".join(grpo_cmd), flush=True)
    if subprocess.run(grpo_cmd).returncode != 0:
        print("essa-grpo failed; see its run.log", file=sys.stderr)
        return 1

    grpo_run = Path(config.output_dir) / name  # relative paths: from the current folder, as essa-grpo
    compare_cmd = [sys.executable, "-m", "essa.reporting.compare", str(args.essa_run), str(grpo_run),
                   "--output", str(args.output or grpo_run)]
    if args.target is not None:
        compare_cmd += ["--target", str(args.target)]
    print("$ " + " ".join(compare_cmd), flush=True)
    return subprocess.run(compare_cmd).returncode


if __name__ == "__main__":
    raise SystemExit(main())
