"""``essa-train``: one ESSA run from a config.

    essa-train --config launch/configs/demo-cpu.yaml
    essa-train --config launch/configs/demo-cpu.yaml --set engine.max_tokens=48 --print-config
    mpirun -n 3 essa-train --config launch/configs/demo-cpu.yaml

In this version the run sets up its run directory and measures the base model's accuracy on the
validation split (the starting point of the search); the MPI search runtime is not built yet.
"""

from __future__ import annotations

import argparse
import sys
import time

from essa.cli.common import add_config_args, config_from_args


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="essa-train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser)
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved config as YAML and exit")
    parser.add_argument("--limit", type=int,
                        help="evaluate only the first N validation items (quick checks)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    config = config_from_args(args)
    if args.print_config:
        from essa.config import to_yaml
        sys.stdout.write(to_yaml(config))
        return 0

    from essa.data import build_prompts, load_task
    from essa.engines import make_engine, sampling_from_config
    from essa.evaluation.evaluate import evaluate
    from essa.rewards import get_reward
    from essa.rundir import MetricsWriter, create_run_dir, setup_logging

    t0 = time.time()
    task = load_task(config.task)  # fails fast on a missing dataset, before the engine starts
    val = task.split(config.task.validation_split)[: args.limit]
    run_dir = create_run_dir(config)
    log = setup_logging(run_dir)
    log.info("run directory: %s", run_dir)
    log.info("task %s: %s", task.name, ", ".join(f"{k} {len(v)}" for k, v in task.splits.items()))
    log.info("loading %s (%s engine) ...", config.model.path, config.engine.backend)
    engine = make_engine(config.model, config.engine)
    log.info("engine ready in %.0f s", time.time() - t0)
    prompts = build_prompts(engine.tokenizer, val, task.instruction, config.model.chat_template)
    result = evaluate(engine, prompts, val, get_reward(task.reward), sampling_from_config(config.engine))
    MetricsWriter(run_dir / "metrics.jsonl").write(
        {"generation": 0, "phase": "base", "val_accuracy": result.accuracy, "val_items": len(val),
         "tokens": result.tokens, "wall_time": round(time.time() - t0, 1)})
    log.info("base model: validation accuracy %.1f%% (%d/%d, reward %s)", 100 * result.accuracy,
             round(result.accuracy * len(val)), len(val), task.reward)
    log.info("done in %.0f s; metrics: %s", time.time() - t0, run_dir / "metrics.jsonl")
    engine.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
